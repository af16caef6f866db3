"""FastAPI app: JSON routes under /api/v1. Commands go to Temporal, queries to SQL."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from commands import CommandError, ReferralCommands
from config import Settings
from models import repository
from models.db import create_engine, session_factory
from models.enums import RECEIVING_ROLES, Role, Status, Team
from models.identity import fingerprint
from models.identity import referral_id as referral_id_for
from models.payloads import AcknowledgeInput, Actor, DecisionInput, DeclineInput, ReferralState
from models.schemas import (
    AcknowledgementCreate,
    Chronology,
    DecisionCreate,
    DeclineCreate,
    EventRead,
    ReferralCreate,
    ReferralPage,
    ReferralRead,
)
from models.tables import Referral, User
from web.ack import router as ack_router

log = structlog.get_logger(__name__)


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
    if not request.url.path.startswith(router.prefix + "/"):
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


# ---- dependencies ----------------------------------------------------------------------------


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request; the request boundary commits."""
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        yield session
        await session.commit()


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def current_user(request: Request, session: SessionDep) -> User:
    """The user behind the bearer token, or 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    challenge = {"WWW-Authenticate": "Bearer"}
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>", headers=challenge)
    user = await repository.user_for_token(session, token.strip(), now=datetime.now(UTC))
    if user is None:
        raise ApiError(401, "unauthorized", "the token is not valid", headers=challenge)
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def commands_of(request: Request) -> ReferralCommands:
    """The Temporal command sender."""
    commands: ReferralCommands = request.app.state.commands
    return commands


Commands = Annotated[ReferralCommands, Depends(commands_of)]


def require(user: User, *roles: Role) -> None:
    """403 unless the user has one of `roles`."""
    if user.role not in {r.value for r in roles}:
        raise ApiError(403, "forbidden", f"the {user.role} role may not do this")


def _same_force(a: str | None, b: str) -> bool:
    return a is not None and " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


async def visible_referral(session: AsyncSession, user: User, referral_id: str) -> Referral:
    """The referral if this user may see it: 404 unknown, 403 another force's for police."""
    if not repository.is_referral_id(referral_id):
        # Not even the shape of an id (PostgreSQL refuses some strings, e.g. with NUL, outright).
        raise ApiError(404, "not_found", "no such referral")
    row = await repository.get_referral(session, referral_id)
    if row is None:
        raise ApiError(404, "not_found", "no such referral")
    if user.role == Role.POLICE.value and not _same_force(user.force, row.force):
        raise ApiError(403, "forbidden", "this referral belongs to another force")
    return row


def actor_of(user: User) -> Actor:
    """The user as recorded in history."""
    return Actor(user_id=user.id, name=user.name, role=Role(user.role))


# ---- routes ----------------------------------------------------------------------------------

router = APIRouter(prefix="/api/v1")


def _read(result_state: ReferralState, now: datetime) -> dict[str, Any]:
    return ReferralRead.build(result_state, now=now).model_dump(mode="json", exclude_none=False)


@router.post("/referrals", status_code=201, response_model=ReferralRead, responses={200: {}, 202: {}})
async def submit_referral(
    body: ReferralCreate, user: CurrentUser, session: SessionDep, commands: Commands
) -> JSONResponse:
    """Submit a referral: 201 created, 202 created but not yet listed, 200 duplicate, 409 conflict."""
    require(user, Role.POLICE, Role.FRONT_DOOR)
    if user.role == Role.POLICE.value and not _same_force(user.force, body.force):
        raise ApiError(
            403,
            "forbidden",
            "police users refer for their own force only",
            fields={"force": "not your force"},
        )
    details = body.to_details()
    existing = await repository.get_referral(
        session, referral_id_for(details.force, details.police_reference)
    )
    await session.commit()
    if existing is not None and existing.status == Status.CLOSED.value:
        # The SQL key outlives Temporal's retention: closed referrals are answered from here.
        if existing.fingerprint != fingerprint(details):
            raise ApiError(409, "conflict", "this police reference was already used with different content")
        now = datetime.now(UTC)
        return JSONResponse(_read(repository.state_of(existing), now), status_code=200)
    result = await commands.submit(details, actor=actor_of(user), received_at=datetime.now(UTC))
    status = 200 if not result.created else (201 if result.projected else 202)
    return JSONResponse(_read(result.state, datetime.now(UTC)), status_code=status)


@router.get("/referrals", response_model=ReferralPage)
async def list_referrals(
    user: CurrentUser,
    session: SessionDep,
    status: Annotated[
        str, Query(pattern="^(open|awaiting_decision|awaiting_acknowledgement|closed)$")
    ] = "open",
    team: Team | None = None,
    overdue: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> ReferralPage:
    """Referrals ordered by due instant, filtered, a page at a time."""
    require(user, Role.FRONT_DOOR, Role.EARLY_HELP, Role.SOCIAL_CARE, Role.OTHER_AGENCY, Role.MANAGER)
    now = datetime.now(UTC)
    filters = repository.ListFilter(status=status, team=team, overdue=overdue)
    try:
        rows, next_cursor = await repository.list_referrals(
            session, filters, now=now, limit=limit, cursor=cursor
        )
    except ValueError as exc:
        raise ApiError(422, "invalid", str(exc), fields={"cursor": str(exc)}) from None
    items = [ReferralRead.build(repository.state_of(r), now=now) for r in rows]
    return ReferralPage(items=items, next_cursor=next_cursor)


@router.get("/referrals/{referral_id}", response_model=ReferralRead)
async def get_referral(referral_id: str, user: CurrentUser, session: SessionDep) -> ReferralRead:
    """One referral with its hand-offs, events and details."""
    row = await visible_referral(session, user, referral_id)
    events = await repository.events_of(session, referral_id)
    return ReferralRead.build(
        repository.state_of(row), now=datetime.now(UTC), events=events, details=row.details
    )


@router.post("/referrals/{referral_id}/decision", response_model=ReferralRead)
async def decide(
    referral_id: str, body: DecisionCreate, user: CurrentUser, session: SessionDep, commands: Commands
) -> dict[str, Any]:
    """The front door's decision; 409 when not awaiting one."""
    require(user, Role.FRONT_DOOR)
    await visible_referral(session, user, referral_id)
    await session.commit()
    result = await commands.decide(
        referral_id, DecisionInput(outcome=body.outcome, note=body.note, actor=actor_of(user))
    )
    return _read(result.state, datetime.now(UTC))


@router.post("/referrals/{referral_id}/acknowledgement", response_model=ReferralRead)
async def acknowledge(
    referral_id: str, body: AcknowledgementCreate, user: CurrentUser, session: SessionDep, commands: Commands
) -> dict[str, Any]:
    """A receiving team records the referral; 409 when it is not awaiting this team."""
    require(user, *RECEIVING_ROLES)
    await visible_referral(session, user, referral_id)
    await session.commit()
    team = RECEIVING_ROLES[Role(user.role)]
    result = await commands.acknowledge(
        referral_id,
        AcknowledgeInput(team=team, record_id=body.record_id, note=body.note, actor=actor_of(user)),
    )
    return _read(result.state, datetime.now(UTC))


@router.post("/referrals/{referral_id}/decline", response_model=ReferralRead)
async def decline(
    referral_id: str, body: DeclineCreate, user: CurrentUser, session: SessionDep, commands: Commands
) -> dict[str, Any]:
    """Early Help declines; the referral goes back to the front door."""
    require(user, Role.EARLY_HELP)
    await visible_referral(session, user, referral_id)
    await session.commit()
    result = await commands.decline(
        referral_id, DeclineInput(reason=body.reason, note=body.note, actor=actor_of(user))
    )
    return _read(result.state, datetime.now(UTC))


CSV_COLUMNS = ["seq", "at", "type", "team", "handoff_seq", "actor_name", "actor_role", "data"]


@router.get("/referrals/{referral_id}/chronology", response_model=Chronology)
async def chronology(
    referral_id: str,
    user: CurrentUser,
    session: SessionDep,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> Any:
    """Every event in order; `?format=csv` for a spreadsheet."""
    row = await visible_referral(session, user, referral_id)
    events = [EventRead(**e.model_dump()) for e in await repository.events_of(session, referral_id)]
    if format == "json":
        return Chronology(events=events)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for e in events:
        writer.writerow(
            [
                e.seq,
                e.at.isoformat(),
                e.type.value,
                e.team.value if e.team else "",
                e.handoff_seq or "",
                e.actor.name if e.actor else "",
                e.actor.role.value if e.actor else "",
                "; ".join(f"{k}={v}" for k, v in e.data.items()),
            ]
        )
    filename = f"{row.reference}-chronology.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


# ---- operations ------------------------------------------------------------------------------

ops = APIRouter()


@ops.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@ops.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the read model and Temporal each answer."""
    checks: dict[str, str] = {}
    engine: AsyncEngine = request.app.state.engine
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except (OSError, SQLAlchemyError) as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        client: Client = request.app.state.commands.client
        await client.workflow_service.get_system_info(GetSystemInfoRequest(), timeout=timedelta(seconds=3))
        checks["temporal"] = "ok"
    except (RPCError, RuntimeError, OSError) as exc:
        checks["temporal"] = f"unavailable: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )


@ops.get("/metrics", response_class=PlainTextResponse)
async def metrics(session: SessionDep) -> str:
    """Prometheus text: open and overdue referrals by awaiting team."""
    try:
        counts = await repository.open_counts(session, now=datetime.now(UTC))
    except OperationalError:
        raise ApiError(503, "unavailable", "the database is unavailable") from None
    lines = [
        "# HELP referrals_open Referrals not yet closed, by the team they await.",
        "# TYPE referrals_open gauge",
    ]
    lines += [f'referrals_open{{team="{team or "none"}"}} {count}' for team, count, _ in counts]
    lines += [
        "# HELP referrals_overdue Open referrals past their due instant.",
        "# TYPE referrals_overdue gauge",
    ]
    lines += [f'referrals_overdue{{team="{team or "none"}"}} {late}' for team, _, late in counts]
    return "\n".join(lines) + "\n"


@ops.get("/dev/outbox")
async def dev_outbox(request: Request, session: SessionDep) -> list[dict[str, Any]]:
    """The built-in outbox (only when no SMTP server is configured)."""
    if not request.app.state.outbox_enabled:
        raise ApiError(404, "not_found", "the dev outbox is off: email goes to REFERRALS_SMTP_URL")
    rows = await repository.outbox(session)
    return [
        {
            "key": r.key,
            "reference": r.reference,
            "kind": r.kind,
            "to": r.recipients,
            "subject": r.subject,
            "body": r.body,
            "message_id": r.message_id,
            "status": r.status,
            "sent_at": r.sent_at.isoformat() if r.sent_at else None,
        }
        for r in rows
    ]


# ---- app -------------------------------------------------------------------------------------


def create_app(
    settings: Settings,
    *,
    secret: str,
    client: Client | None = None,
    engine: AsyncEngine | None = None,
    outbox_enabled: bool = False,
) -> FastAPI:
    """The app; `client` and `engine` may be given (tests, `referrals dev`), else built at start."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_engine = engine is None
        app.state.engine = engine or create_engine(settings.resolved_database_url)
        app.state.sessions = session_factory(app.state.engine)
        # Lazy: the API starts (and says 503) while Temporal is down, instead of refusing to start.
        temporal = client or await Client.connect(
            settings.resolved_temporal_address,
            namespace=settings.temporal_namespace,
            data_converter=pydantic_data_converter,
            lazy=True,
        )
        app.state.commands = ReferralCommands(temporal, settings.task_queue)
        try:
            yield
        finally:
            if own_engine:
                await app.state.engine.dispose()

    app = FastAPI(title="referral-tracker", version="0.1.0", lifespan=lifespan)
    app.state.outbox_enabled = outbox_enabled
    app.state.links_secret = secret
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(ops)
    app.include_router(ack_router)
    return app
