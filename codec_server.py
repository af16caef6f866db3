"""Temporal's remote codec protocol over HTTP, so operators can read encrypted history.

`POST /encode` and `POST /decode` (also under `/{namespace}/...`, the Temporal CLI's endpoint
templating) take and answer `{"payloads": [...]}`, each payload in protobuf's JSON form
(`metadata` values and `data` in base64). The codec is the worker's own (codec.py), so
whatever the worker encrypted, under the current key or an old one, decodes here.

Decoding shows children's details, so only an operator may call it: a bearer API token of
a `manager` or `admin` user, looked up in the read model. Each request is logged with who
made it and how many payloads it held, never with their contents.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import structlog
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from models import repository
from models.db import create_engine, session_factory
from models.enums import Role

log = structlog.get_logger("codec_server")

#: Roles that may see decoded payloads (children's details) and encode new ones.
OPERATOR_ROLES = frozenset({Role.MANAGER.value, Role.ADMIN.value})

#: The largest request body read. A Temporal payload is at most 2 MiB by default; the UI
#: sends a handful per request, so this leaves room without letting one caller exhaust memory.
MAX_BODY_BYTES = 16 * 1024 * 1024

#: Headers the Temporal UI sends with codec requests (it adds Authorization when told to).
CORS_HEADERS = ["Authorization", "Content-Type", "X-Namespace"]


class CodecServerError(Exception):
    """Configuration the codec server cannot start with; the message is one line."""


class Refused(Exception):
    """A request answered with the JSON error shape {"error": {"code", "message", "fields"}}."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The same error shape as the API's."""
    body = {"error": {"code": code, "message": message, "fields": {}}}
    return JSONResponse(body, status_code=status, headers=headers)


def is_loopback(host: str) -> bool:
    """True when `host` is a loopback address, or `localhost` resolving only to loopback ones."""
    name = host.strip().strip("[]")
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    if name.lower() != "localhost":
        return False  # any other name may resolve to an address others can reach
    try:
        infos = socket.getaddrinfo(name, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def cors_origin(text: str) -> str:
    """A browser origin (scheme://host[:port]) as browsers send it; CodecServerError otherwise.

    A wildcard is refused: with credentials allowed, any web page could make a logged-in
    operator's browser decode history for it.
    """
    parts = urlsplit(text.strip())
    try:
        port = parts.port
    except ValueError:
        raise CodecServerError(f"--cors-origin {text!r}: bad port") from None
    if (
        parts.scheme not in {"http", "https"}
        or not parts.hostname
        or parts.path not in {"", "/"}
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise CodecServerError(
            f"--cors-origin {text!r} is not an origin like http://localhost:8233 (no wildcard, no path)"
        )
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


@dataclass(frozen=True)
class Caller:
    """Who made a codec request, for the log."""

    user_id: str | None
    email: str | None
    role: str | None


ANONYMOUS = Caller(user_id=None, email=None, role=None)


class CodecEndpoints:
    """The two routes, with the codec and (unless auth is off) the read model's users."""

    def __init__(self, codec: PayloadCodec, *, authenticate: bool) -> None:
        self.codec = codec
        self.authenticate = authenticate
        #: Set while the app's lifespan runs (the read model's engine lives as long as the server).
        self.sessions: async_sessionmaker[AsyncSession] | None = None

    async def encode(self, request: Request) -> Response:
        """POST /encode: encrypt payloads under the current key."""
        return await self._run(request, "encode")

    async def decode(self, request: Request) -> Response:
        """POST /decode: decrypt payloads under whichever key each names."""
        return await self._run(request, "decode")

    async def _run(self, request: Request, action: str) -> Response:
        namespace = str(request.path_params.get("namespace") or request.headers.get("x-namespace", ""))[:200]
        try:
            caller = await self._caller(request)
            payloads = _parse(await _body(request))
            try:
                if action == "decode":
                    out = await self.codec.decode(payloads)
                else:
                    out = await self.codec.encode(payloads)
            except (ValueError, DecodeError) as exc:
                # The codec's messages name a key id or a failed check, never payload contents.
                raise Refused(422, "undecodable", str(exc).splitlines()[0][:300]) from None
        except Refused as exc:
            log.warning(
                f"codec.{action}.refused",
                status=exc.status,
                reason=exc.code,
                namespace=namespace,
                client=request.client.host if request.client else None,
            )
            return error_response(exc.status, exc.code, exc.message, exc.headers)
        log.info(
            f"codec.{action}",
            user_id=caller.user_id,
            user=caller.email or "anonymous (--no-auth)",
            role=caller.role,
            payloads=len(payloads),
            namespace=namespace,
        )
        return JSONResponse({"payloads": [json_format.MessageToDict(p) for p in out]})

    async def _caller(self, request: Request) -> Caller:
        if not self.authenticate:
            return ANONYMOUS
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        challenge = {"WWW-Authenticate": "Bearer"}
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(401, "unauthorized", "send Authorization: Bearer <API token>", headers=challenge)
        if self.sessions is None:
            # Never fail open: without the read model nobody can be authenticated.
            raise Refused(503, "unavailable", "the codec server is not started")
        try:
            async with self.sessions() as session:
                user = await repository.user_for_token(session, token.strip(), now=datetime.now(UTC))
        except (SQLAlchemyError, OSError) as exc:
            log.warning("codec.database_unavailable", error=type(exc).__name__)
            raise Refused(503, "unavailable", "the read model is unavailable; retry") from None
        if user is None:
            raise Refused(401, "unauthorized", "the token is not valid", headers=challenge)
        if user.role not in OPERATOR_ROLES:
            raise Refused(403, "forbidden", f"the {user.role} role may not use the codec server")
        return Caller(user_id=user.id, email=user.email, role=user.role)


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise Refused(413, "too_large", f"send at most {MAX_BODY_BYTES} bytes per request")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise Refused(413, "too_large", f"send at most {MAX_BODY_BYTES} bytes per request")
    return bytes(body)


def _parse(body: bytes) -> list[Payload]:
    try:
        data = json.loads(body.decode("utf-8"))
        if not isinstance(data, dict):
            # protobuf's parser would take `[]` as an empty message; the protocol sends an object.
            raise ValueError("the body is not a JSON object")
        message = json_format.ParseDict(data, Payloads())
    except (json_format.ParseError, ValueError, RecursionError) as exc:
        # UnicodeDecodeError and JSONDecodeError are ValueErrors. The parsers' messages name
        # a field or a position, never payload data.
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise Refused(400, "invalid", f'send {{"payloads": [...]}} in protobuf JSON form: {reason}') from None
    return list(message.payloads)


async def _http_error(_: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    headers = exc.headers if isinstance(exc, HTTPException) else None
    return error_response(status, code, str(getattr(exc, "detail", "error")), dict(headers or {}))


def create_codec_app(
    *, codec: PayloadCodec, cors_origins: Sequence[str], database_url: str | None
) -> Starlette:
    """The codec server; `database_url` None means no authentication (loopback only, see cli)."""
    origins = [cors_origin(origin) for origin in cors_origins]
    endpoints = CodecEndpoints(codec, authenticate=database_url is not None)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if database_url is None:
            yield
            return
        engine = create_engine(database_url)
        endpoints.sessions = session_factory(engine)
        try:
            yield
        finally:
            endpoints.sessions = None
            await engine.dispose()

    routes = [
        Route("/encode", endpoints.encode, methods=["POST"]),
        Route("/decode", endpoints.decode, methods=["POST"]),
        Route("/{namespace}/encode", endpoints.encode, methods=["POST"]),
        Route("/{namespace}/decode", endpoints.decode, methods=["POST"]),
    ]
    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["POST"],
            allow_headers=CORS_HEADERS,
            # The UI's "include cross-origin credentials" setting needs this; origins are exact.
            allow_credentials=True,
            max_age=600,
        )
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )
