"""The JSON error shape for every failure: {"error": {"code", "message", "fields"}}."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from temporalio.service import RPCError

from commands import CommandError
from models import repository

log = structlog.get_logger(__name__)

API_PREFIX = "/api/v1"


class ErrorDetail(BaseModel):
    """What went wrong: a stable code, a sentence, and the bad fields by name."""

    code: str
    message: str
    fields: dict[str, str]


class ErrorRead(BaseModel):
    """Body of every error response."""

    error: ErrorDetail


_ERROR_DESCRIPTIONS = {
    401: "No valid bearer token",
    403: "The caller's role or force may not do this",
    404: "No such referral (or resource)",
    409: "Conflicts with the referral's state",
    422: "Invalid input; `fields` names each bad field",
    503: "The database or Temporal is unavailable; retry after Retry-After seconds",
}
_ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    503: {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}},
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route or router that answers these statuses in the error shape."""
    return {
        status: {"model": ErrorRead, "description": _ERROR_DESCRIPTIONS.get(status, "Error")}
        for status in statuses
    }


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
    body = ErrorRead(error=ErrorDetail(code=code, message=message, fields=fields or {}))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


Model = TypeVar("Model", bound=BaseModel)


def field_errors(exc: ValidationError) -> dict[str, str]:
    """Each bad field by its dotted name (its first message), as a 422 names it."""
    fields: dict[str, str] = {}
    for err in exc.errors():
        name = ".".join(str(p) for p in err.get("loc", ())) or "body"
        fields.setdefault(name, str(err.get("msg", "invalid")))
    return fields


def parse_body(body: bytes, model: type[Model], what: str) -> Model:
    """A JSON request body read by hand (after its signature or token is checked) as `model`;
    422 naming each bad field otherwise. `what` names the body in the message."""
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(422, "invalid", "the body is not JSON", fields={"body": "not JSON"}) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, "invalid", f"the {what} is not valid", fields=field_errors(exc)) from None


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
    """Every error in the contract's JSON shape, declared in the OpenAPI document; never a bare 500."""
    _declare_errors_in_openapi(app)

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
        if isinstance(exc, (OSError, TimeoutError)):
            # A socket error that escaped a driver (the read model or SMTP gone): retryable.
            log.warning("dependency.unavailable", error=type(exc).__name__)
            return _error(
                503, "unavailable", "a dependency is unavailable; retry", headers={"Retry-After": "5"}
            )
        log.exception("api.unexpected_error", error=type(exc).__name__)
        return _error(500, "internal", "unexpected error; it has been logged")


# ---- the OpenAPI document --------------------------------------------------------------------

_BEARER = "bearerAuth"
_HTTP_VALIDATION_REF = "#/components/schemas/HTTPValidationError"


def _declare_errors_in_openapi(app: FastAPI) -> None:
    """Declare the error shape and the bearer scheme on every /api/v1 operation.

    The handlers above answer for every route, so the statuses are declared from the
    document rather than route by route: 401/403/503 for every authenticated operation, 404
    where the path names a resource, 409 for commands, and the error shape (not FastAPI's
    HTTPValidationError) for 422. A route's own `responses=` (see error_responses) wins.
    """
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()
        if not document.get("x-errors-declared"):
            _declare(document)
            document["x-errors-declared"] = True
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _declare(document: dict[str, Any]) -> None:
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    error_schema = ErrorRead.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, schema in error_schema.pop("$defs", {}).items():
        schemas.setdefault(name, schema)
    schemas.setdefault(ErrorRead.__name__, error_schema)
    ref = {"$ref": f"#/components/schemas/{ErrorRead.__name__}"}
    uses_bearer = False
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            statuses = set()
            validated = "requestBody" in operation or bool(operation.get("parameters"))
            if validated or "422" in responses:
                statuses.add(422)
            if path.startswith(API_PREFIX + "/"):
                statuses |= {401, 403, 503}
                if "{" in path:
                    statuses.add(404)
                if method == "post":
                    statuses.add(409)
                operation.setdefault("security", [{_BEARER: []}])
                uses_bearer = True
            for status in sorted(statuses):
                declared = responses.get(str(status))
                if declared is not None and not _is_fastapi_validation_error(declared):
                    continue
                response: dict[str, Any] = {
                    "description": _ERROR_DESCRIPTIONS[status],
                    "content": {"application/json": {"schema": ref}},
                }
                if status in _ERROR_HEADERS:
                    response["headers"] = _ERROR_HEADERS[status]
                responses[str(status)] = response
    if uses_bearer:
        components.setdefault("securitySchemes", {})[_BEARER] = {"type": "http", "scheme": "bearer"}
    if _HTTP_VALIDATION_REF not in str(document.get("paths", {})):
        # Nothing answers in FastAPI's own validation shape any more.
        schemas.pop("HTTPValidationError", None)
        if "#/components/schemas/ValidationError" not in str(schemas):
            schemas.pop("ValidationError", None)


def _is_fastapi_validation_error(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref") == _HTTP_VALIDATION_REF)
