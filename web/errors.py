"""The JSON error shape for every failure: {"error": {"code", "message", "fields"}}."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from temporalio.service import RPCError

from commands import CommandError
from models import repository

log = structlog.get_logger(__name__)

API_PREFIX = "/api/v1"


class ApiError(Exception):
    """An error answered as {"error": {"code", "message", "fields"}}."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        fields: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.fields = fields or {}
        self.headers = headers or {}


def _error(
    status: int,
    code: str,
    message: str,
    fields: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "fields": fields or {}}}
    return JSONResponse(body, status_code=status, headers=headers)


_COMMAND_STATUS = {"conflict": 409, "not_awaiting": 409, "closed": 409, "not_found": 404, "unavailable": 503}


_LOCATIONS = ("body", "query", "path", "header", "cookie")


def _field_name(loc: tuple[Any, ...], kind: str = "") -> str:
    # Only the leading element names where the value came from: a body field may itself be
    # called "query" or "body". A JSON syntax error's location is a character offset, not a field.
    if kind == "json_invalid":
        return "body"
    parts = [str(p) for p in (loc[1:] if loc and loc[0] in _LOCATIONS else loc)]
    return ".".join(parts) or "body"


async def _is_anonymous(request: Request) -> bool:
    """True when an /api/v1 request has no valid bearer token (so 401 comes before 422)."""
    if not request.url.path.startswith(API_PREFIX + "/"):
        return False
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return True
    try:
        async with request.app.state.sessions() as session:
            user = await repository.user_for_token(session, token.strip(), now=datetime.now(UTC))
    except (SQLAlchemyError, OSError):
        return False  # the 422 stands; the next request will meet the database error itself
    return user is None


def _unauthorized() -> JSONResponse:
    return _error(
        401, "unauthorized", "send Authorization: Bearer <token>", headers={"WWW-Authenticate": "Bearer"}
    )


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route answers on this path (for a 405's Allow header)."""
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def _temporal_unreachable(exc: BaseException) -> bool:
    # A lazily connected client raises a bare RuntimeError when the server cannot be reached.
    return isinstance(exc, RuntimeError) and str(exc).startswith("Failed client connect")


def install_error_handlers(app: FastAPI) -> None:
    """Every error in the contract's JSON shape; nothing escapes as a bare 500."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.fields, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI parses a JSON body before it runs dependencies: without this, an anonymous
        # caller sending malformed JSON would learn about validation instead of getting 401.
        if await _is_anonymous(request):
            return _unauthorized()
        fields: dict[str, str] = {}
        for err in exc.errors():
            name = _field_name(tuple(err.get("loc", ())), str(err.get("type", "")))
            fields.setdefault(name, str(err.get("msg", "invalid")))
        return _error(422, "invalid", "the request is not valid: see fields", fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # A body FastAPI could not even decode (bad UTF-8, absurd nesting) is invalid input.
            if await _is_anonymous(request):
                return _unauthorized()
            return _error(422, "invalid", "the request body is not valid JSON", {"body": str(exc.detail)})
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            # Starlette names only the first route that matched the path; list every one.
            allowed = _allowed_methods(request)
            if allowed:
                headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        return _error(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(CommandError)
    async def _command(_: Request, exc: CommandError) -> JSONResponse:
        status = _COMMAND_STATUS.get(exc.code, 409)
        headers = {"Retry-After": "5"} if status == 503 else None
        return _error(status, exc.code, exc.message, headers=headers)

    @app.exception_handler(RPCError)
    async def _temporal(_: Request, exc: RPCError) -> JSONResponse:
        log.warning("temporal.unavailable", status=str(exc.status))
        return _error(503, "unavailable", "Temporal is unreachable; retry", headers={"Retry-After": "5"})

    @app.exception_handler(SQLAlchemyError)
    async def _database(_: Request, exc: SQLAlchemyError) -> JSONResponse:
        log.warning("database.unavailable", error=type(exc).__name__)
        return _error(503, "unavailable", "the database is unavailable; retry", headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        if _temporal_unreachable(exc):
            log.warning("temporal.unavailable", error=str(exc).splitlines()[0][:200])
            return _error(503, "unavailable", "Temporal is unreachable; retry", headers={"Retry-After": "5"})
        log.exception("api.unexpected_error", error=type(exc).__name__)
        return _error(500, "internal", "unexpected error; it has been logged")
