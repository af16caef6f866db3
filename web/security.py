"""Security headers on every response; HTML pages get a Content-Security-Policy with a fresh nonce."""

from __future__ import annotations

import secrets

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: FastAPI's own documentation pages load their scripts from a CDN; they keep no CSP of ours.
_DOCS = ("/docs", "/redoc")


def content_security_policy(nonce: str) -> str:
    """Our pages load only our own files; the one inline script (GOV.UK's js-enabled) carries the nonce."""
    return (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        f"script-src 'self' 'nonce-{nonce}'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


class SecurityHeaders:
    """ASGI middleware: nosniff and same-origin referrers everywhere, CSP and no caching on pages."""

    def __init__(self, app: ASGIApp, *, https: bool = False) -> None:
        self.app = app
        #: Served as https (REFERRALS_PUBLIC_URL): browsers are told never to use plain http.
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(18)
        # Request.state reads scope["state"]: templates find the nonce there.
        scope.setdefault("state", {})["csp_nonce"] = nonce
        path = str(scope.get("path", ""))
        docs = path.startswith(_DOCS)
        api = path.startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "same-origin")
                # Older browsers ignore CSP frame-ancestors: no page of ours is ever framed.
                headers.setdefault("X-Frame-Options", "DENY")
                if self.https:
                    headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
                kind = headers.get("content-type", "")
                if kind.startswith("text/html") and not docs:
                    headers.setdefault("Content-Security-Policy", content_security_policy(nonce))
                if kind.startswith(("text/html", "text/csv")) or api:
                    # Pages, exports and API answers hold personal data: never in a shared cache.
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)
