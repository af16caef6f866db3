"""A local GOV.UK Notify: a real HTTP server (Starlette on uvicorn) that checks requests as Notify does.

It checks the bearer JWT (HS256 header, signature with the service's secret key, `iss` the
service id, `iat` within 30 s), then the body of `POST /v2/notifications/email` (required and
unknown fields, a known template, its ((placeholders)) in `personalisation`), and answers in
Notify's shapes: 201 with the notification, or `{"status_code", "errors": [{"error", "message"}]}`.
`GET /v2/notifications?reference=` lists what it holds; `GET /v2/template/{id}` answers for the
templates it knows. Tests script failures per request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SERVICE_ID = "26785a09-ab16-4eb0-8407-a37497a57506"
SECRET = "3d844edf-8d35-48ac-975b-e847b4f122b0"
API_KEY = f"referrals_test-{SERVICE_ID}-{SECRET}"
TEMPLATE_ID = "f33517ff-2a88-4f6e-b855-c550268ce08a"
#: The generic template: subject ((subject)), body ((body)).
TEMPLATES = {TEMPLATE_ID: ("subject", "body")}
EMAIL_FIELDS = {"email_address", "template_id", "personalisation", "reference", "email_reply_to_id"}
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class Scripted:
    """How the server answers one request instead of normally.

    `status` 0 with `hold` takes the message and then keeps the answer back for `hold` seconds
    (the client times out: a lost answer).
    """

    status: int = 0
    error: str = ""
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    hold: float = 0.0


@dataclass
class FakeNotify:
    """What the server holds and how it will answer the next requests."""

    service_id: str = SERVICE_ID
    secret: str = SECRET
    notifications: list[dict[str, Any]] = field(default_factory=list)
    #: Answers for the next POSTs, in order (consumed), before any checks but authorisation.
    script: list[Scripted] = field(default_factory=list)
    #: Addresses Notify refuses with a 400 (e.g. not on a team key's guest list).
    refuse: set[str] = field(default_factory=set)
    posts: int = 0
    auth_failures: list[str] = field(default_factory=list)

    def to(self, address: str) -> list[dict[str, Any]]:
        """Notifications sent to one address."""
        return [n for n in self.notifications if n["email_address"] == address]

    def app(self) -> Starlette:
        """The ASGI app."""
        return Starlette(
            routes=[
                Route("/v2/notifications/email", self._send_email, methods=["POST"]),
                Route("/v2/notifications", self._list, methods=["GET"]),
                Route("/v2/template/{template_id}", self._template, methods=["GET"]),
            ]
        )

    # ---- checks --------------------------------------------------------------------------

    def _auth(self, request: Request) -> JSONResponse | None:
        header = request.headers.get("authorization", "")
        if not header:
            return self._refuse(401, "AuthError", "Unauthorized: authentication token must be provided")
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer":
            return self._refuse(401, "AuthError", "Unauthorized: authentication bearer scheme must be used")
        try:
            head_b64, claims_b64, signature_b64 = token.split(".")
            head = json.loads(_unb64(head_b64))
            claims = json.loads(_unb64(claims_b64))
            signature = _unb64(signature_b64)
        except ValueError:
            return self._refuse(403, "AuthError", "Invalid token: signature, api token not found")
        if head != {"typ": "JWT", "alg": "HS256"}:
            return self._refuse(403, "AuthError", "Invalid token: algorithm used is not HS256")
        expected = hmac.new(
            self.secret.encode(), f"{head_b64}.{claims_b64}".encode(), hashlib.sha256
        ).digest()
        if not hmac.compare_digest(expected, signature):
            return self._refuse(403, "AuthError", "Invalid token: signature, api token not found")
        if claims.get("iss") != self.service_id:
            return self._refuse(403, "AuthError", "Invalid token: service not found")
        iat = claims.get("iat")
        if not isinstance(iat, int) or abs(time.time() - iat) > 30:
            return self._refuse(
                403, "AuthError", "Error: Your system clock must be accurate to within 30 seconds"
            )
        return None

    def _refuse(
        self, status: int, error: str, message: str, headers: dict[str, str] | None = None
    ) -> JSONResponse:
        if error == "AuthError":
            self.auth_failures.append(message)
        return JSONResponse(
            {"status_code": status, "errors": [{"error": error, "message": message}]},
            status_code=status,
            headers=headers,
        )

    def _validate(self, body: Any) -> JSONResponse | None:
        if not isinstance(body, dict):
            return self._refuse(400, "ValidationError", "Request body must be a JSON object")
        for name in ("email_address", "template_id"):
            if name not in body:
                return self._refuse(400, "ValidationError", f"{name} is a required property")
        unknown = set(body) - EMAIL_FIELDS
        if unknown:
            return self._refuse(
                400, "ValidationError", f"Additional properties are not allowed ({sorted(unknown)})"
            )
        address = body["email_address"]
        if not isinstance(address, str) or not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", address):
            return self._refuse(400, "ValidationError", "email_address Not a valid email address")
        template = body["template_id"]
        if not isinstance(template, str) or not UUID_RE.match(template):
            return self._refuse(400, "ValidationError", "template_id is not a valid UUID")
        if template not in TEMPLATES:
            return self._refuse(400, "BadRequestError", "Template not found")
        personalisation = body.get("personalisation", {})
        if not isinstance(personalisation, dict):
            return self._refuse(400, "ValidationError", "personalisation is not of type object")
        missing = [p for p in TEMPLATES[template] if p not in personalisation]
        if missing:
            return self._refuse(400, "BadRequestError", f"Missing personalisation: {', '.join(missing)}")
        reference = body.get("reference")
        if reference is not None and not isinstance(reference, str):
            return self._refuse(400, "ValidationError", "reference is not of type string")
        if address in self.refuse:
            return self._refuse(
                400, "BadRequestError", "Can't send to this recipient using a team-only API key"
            )
        return None

    # ---- routes --------------------------------------------------------------------------

    async def _send_email(self, request: Request) -> JSONResponse:
        self.posts += 1
        refused = self._auth(request)
        if refused is not None:
            return refused
        scripted = self.script.pop(0) if self.script else None
        if scripted is not None and scripted.status:
            return self._refuse(scripted.status, scripted.error, scripted.message, scripted.headers)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return self._refuse(400, "ValidationError", "Invalid JSON")
        refused = self._validate(body)
        if refused is not None:
            return refused
        notification = {
            "id": str(uuid.uuid4()),
            "reference": body.get("reference"),
            "email_address": body["email_address"],
            "template_id": body["template_id"],
            "personalisation": body.get("personalisation", {}),
            "created_at": datetime.now(UTC).isoformat(),
            "status": "created",
        }
        self.notifications.append(notification)
        if scripted is not None and scripted.hold:
            await asyncio.sleep(scripted.hold)
        subject = str(notification["personalisation"].get("subject", ""))
        return JSONResponse(
            {
                "id": notification["id"],
                "reference": notification["reference"],
                "content": {
                    "subject": subject,
                    "body": str(notification["personalisation"].get("body", "")),
                    "from_email": "referrals@notifications.service.gov.uk",
                },
                "uri": f"https://api.notifications.service.gov.uk/v2/notifications/{notification['id']}",
                "template": {"id": body["template_id"], "version": 1, "uri": "https://example.invalid"},
            },
            status_code=201,
        )

    async def _list(self, request: Request) -> JSONResponse:
        refused = self._auth(request)
        if refused is not None:
            return refused
        reference = request.query_params.get("reference")
        items = [
            {"id": n["id"], "reference": n["reference"], "email_address": n["email_address"], "type": "email"}
            for n in reversed(self.notifications)
            if reference is None or n["reference"] == reference
        ]
        return JSONResponse({"notifications": items, "links": {"current": str(request.url)}})

    async def _template(self, request: Request) -> JSONResponse:
        refused = self._auth(request)
        if refused is not None:
            return refused
        template_id = request.path_params["template_id"]
        if not UUID_RE.match(template_id):
            return self._refuse(400, "ValidationError", "id is not a valid UUID")
        if template_id not in TEMPLATES:
            return self._refuse(404, "NoResultFound", "No result found")
        subject, body = TEMPLATES[template_id]
        return JSONResponse(
            {
                "id": template_id,
                "name": "referral-tracker",
                "type": "email",
                "version": 1,
                "subject": f"(({subject}))",
                "body": f"(({body}))",
                "created_at": "2026-01-01T00:00:00.000000Z",
            }
        )


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def running(fake: FakeNotify) -> AsyncIterator[str]:
    """The fake served by uvicorn on 127.0.0.1 in this event loop; its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(fake.app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        server.force_exit = True
        await task
