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

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(18)
        # Request.state reads scope["state"]: templates find the nonce there.
        scope.setdefault("state", {})["csp_nonce"] = nonce
        docs = str(scope.get("path", "")).startswith(_DOCS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "same-origin")
                kind = headers.get("content-type", "")
                if kind.startswith("text/html") and not docs:
                    headers.setdefault("Content-Security-Policy", content_security_policy(nonce))
                if kind.startswith(("text/html", "text/csv")):
                    # Pages and exports hold personal data: never keep them in a shared cache.
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)
