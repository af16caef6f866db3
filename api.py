"""FastAPI app: JSON routes under /api/v1. Commands go to Temporal, queries to SQL."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from activities.calendar import WorkingCalendar
from codec import data_converter
from commands import CommandError, ReferralCommands
from config import Settings
from models import repository
from models.db import create_engine, session_factory
from models.enums import RECEIVING_ROLES, Role, Team
from models.identity import fingerprint
from models.identity import referral_id as referral_id_for
from models.payloads import (
    AcknowledgeInput,
    DecisionInput,
    DeclineInput,
    ReferralState,
    TransferInput,
    UpdateResult,
)
from models.policy import Policy, load_policy
from models.schemas import (
    AccessRead,
    AcknowledgementCreate,
    Chronology,
    DecisionCreate,
    DeclineCreate,
    EventRead,
    ReferralCreate,
    ReferralPage,
    ReferralRead,
    TransferCreate,
)
from models.tables import Referral, User
from temporal_connection import client_options
from web.access import (
    access_entry,
    record_read,
    redact,
    same_force,
    scope_team,
    sees_access_log,
    sees_details,
    visible_events,
)
from web.ack import router as ack_router
from web.admin import router as admin_router
from web.batch import router as batch_router
from web.dashboard import router as dashboard_router
from web.deps import (
    DATABASE_DOWN,
    Commands,
    CurrentUser,
    IntakeUser,
    ReadsApartDep,
    SessionDep,
    TokenCache,
    actor_of,
    apart_engine,
    commandable_referral,
    require,
    visible_referral,
)
from web.early_help_hook import router as early_help_hook_router
from web.early_help_hook import webhook_secret
from web.errors import API_PREFIX, ApiError, install_error_handlers
from web.notify_callbacks import router as notify_callbacks_router
from web.ops import ops
from web.referral_page import router as referral_page_router
from web.security import SecurityHeaders
from web.session import Sessions
from web.signin import router as sign_in_router
from web.templating import Site, build_environment, install_pages, site_of

log = structlog.get_logger(__name__)

# ---- routes ----------------------------------------------------------------------------------

router = APIRouter(prefix=API_PREFIX)


def _read(result_state: ReferralState, now: datetime, user: User) -> dict[str, Any]:
    read = redact(ReferralRead.build(result_state, now=now), user)
    return read.model_dump(mode="json", exclude_none=False)


@router.post(
    "/referrals",
    status_code=201,
    response_model=ReferralRead,
    responses={
        200: {"model": ReferralRead, "description": "The same referral was submitted before"},
        202: {
            "model": ReferralRead,
            "description": "Held by Temporal, not yet listed (always so with `Prefer: respond-async`)",
        },
    },
)
async def submit_referral(
    body: ReferralCreate,
    user: IntakeUser,
    reads: ReadsApartDep,
    commands: Commands,
    prefer: Annotated[
        str | None,
        Header(
            max_length=500,
            description="`respond-async` (RFC 7240): answer 202 as soon as Temporal holds the "
            "referral, before its first deadline is planned and listed",
        ),
    ] = None,
) -> JSONResponse:
    """Submit a referral: 201 created, 202 created but not yet listed, 200 duplicate, 409 conflict."""
    require(user, Role.POLICE, Role.FRONT_DOOR)
    if user.role == Role.POLICE.value and not same_force(user.force, body.force):
        raise ApiError(
            403,
            "forbidden",
            "police users refer for their own force only",
            fields={"force": "not your force"},
        )
    details = body.to_details()
    try:
        rid = referral_id_for(details.force, details.police_reference)
        closed = await reads.read(lambda own: repository.closed_referrals(own, [rid]))
    except DATABASE_DOWN:
        # Intake must not depend on the read model: the workflow refuses a duplicate of an open
        # or recently closed referral itself, so only one closed past retention could slip by.
        log.warning("intake.read_model_unavailable", check="closed_duplicate")
        closed = {}
    await reads.release()
    existing = closed.get(rid)
    if existing is not None:
        # The SQL key outlives Temporal's retention: closed referrals are answered from here.
        if existing.fingerprint != fingerprint(details):
            raise ApiError(409, "conflict", "this police reference was already used with different content")
        now = datetime.now(UTC)
        return JSONResponse(_read(repository.state_of(existing), now, user), status_code=200)
    respond_async = prefers_respond_async(prefer)
    submit = commands.submit_async if respond_async else commands.submit
    result = await submit(details, actor=actor_of(user), received_at=datetime.now(UTC))
    status = 200 if not result.created else (201 if result.projected else 202)
    headers = {"Location": f"{API_PREFIX}/referrals/{result.state.referral_id}"}
    if respond_async:
        headers["Preference-Applied"] = "respond-async"
    return JSONResponse(_read(result.state, datetime.now(UTC), user), status_code=status, headers=headers)


def prefers_respond_async(prefer: str | None) -> bool:
    """Whether a `Prefer` header (RFC 7240: comma-separated, each `token[=value][;params]`) asks
    for `respond-async`. Preferences not understood are ignored, as the RFC requires."""
    if not prefer:
        return False
    for preference in prefer.split(","):
        token = preference.split(";", 1)[0].split("=", 1)[0].strip().lower()
        if token == "respond-async":
            return True
    return False


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
    filters = repository.ListFilter(status=status, team=team, overdue=overdue, handed_to=scope_team(user))
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
    """One referral with its hand-offs, events and details (police: its status and outcome only)."""
    row = await visible_referral(session, user, referral_id)
    events = visible_events(await repository.events_of(session, referral_id), user)
    await record_read(session, user, row, via="api")
    read = ReferralRead.build(
        repository.state_of(row),
        now=datetime.now(UTC),
        events=events,
        details=row.details if sees_details(user) else None,
    )
    return redact(read, user)


async def _unlisted_is_404(listed: Referral | None, command: Awaitable[UpdateResult]) -> UpdateResult:
    """The command's result; a referral neither listed nor in Temporal is 404, not "closed"."""
    try:
        return await command
    except CommandError as exc:
        if listed is None and exc.code == "closed":
            raise ApiError(404, "not_found", "no such referral") from None
        raise


@router.post("/referrals/{referral_id}/decision", response_model=ReferralRead)
async def decide(
    referral_id: str, body: DecisionCreate, user: CurrentUser, session: SessionDep, commands: Commands
) -> dict[str, Any]:
    """The front door's decision; 409 when not awaiting one."""
    require(user, Role.FRONT_DOOR)
    listed = await commandable_referral(session, user, referral_id)
    await session.commit()
    decision = DecisionInput(outcome=body.outcome, note=body.note, actor=actor_of(user))
    result = await _unlisted_is_404(listed, commands.decide(referral_id, decision))
    return _read(result.state, datetime.now(UTC), user)


@router.post("/referrals/{referral_id}/acknowledgement", response_model=ReferralRead)
async def acknowledge(
    referral_id: str, body: AcknowledgementCreate, user: CurrentUser, session: SessionDep, commands: Commands
) -> dict[str, Any]:
    """A receiving team records the referral; 409 when it is not awaiting this team.

    The front door records another authority's acknowledgement of a transfer (given by phone,
    say) with that authority's record id; the chronology names who recorded it.
    """
    require(user, *RECEIVING_ROLES, Role.FRONT_DOOR)
    listed = await commandable_referral(session, user, referral_id)
    await session.commit()
    team = RECEIVING_ROLES.get(Role(user.role), Team.OTHER_AUTHORITY)
    ack = AcknowledgeInput(team=team, record_id=body.record_id, note=body.note, actor=actor_of(user))
    result = await _unlisted_is_404(listed, commands.acknowledge(referral_id, ack))
    return _read(result.state, datetime.now(UTC), user)


@router.post("/referrals/{referral_id}/transfer", response_model=ReferralRead)
async def transfer(
    referral_id: str,
    body: TransferCreate,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    commands: Commands,
) -> dict[str, Any]:
    """The front door transfers the referral to another authority's front door (the child lives
    there): 422 when `authority` is not in the policy, 409 when not awaiting a decision."""
    require(user, Role.FRONT_DOOR)
    policy = site_of(request).policy
    refusal = policy.transfer_refusal(body.authority)
    if refusal is not None:
        raise ApiError(422, "invalid", "the request is not valid: see fields", fields={"authority": refusal})
    listed = await commandable_referral(session, user, referral_id)
    await session.commit()
    transfer = TransferInput(
        authority=body.authority,
        authority_name=policy.authority(body.authority).name,
        note=body.note,
        actor=actor_of(user),
    )
    result = await _unlisted_is_404(listed, commands.transfer(referral_id, transfer))
    return _read(result.state, datetime.now(UTC), user)


@router.post("/referrals/{referral_id}/decline", response_model=ReferralRead)
async def decline(
    referral_id: str, body: DeclineCreate, user: CurrentUser, session: SessionDep, commands: Commands
) -> dict[str, Any]:
    """Early Help declines; the referral goes back to the front door."""
    require(user, Role.EARLY_HELP)
    listed = await commandable_referral(session, user, referral_id)
    await session.commit()
    declined = DeclineInput(reason=body.reason, note=body.note, actor=actor_of(user))
    result = await _unlisted_is_404(listed, commands.decline(referral_id, declined))
    return _read(result.state, datetime.now(UTC), user)


CSV_COLUMNS = ["seq", "at", "type", "team", "handoff_seq", "actor_name", "actor_role", "data"]


@router.get(
    "/referrals/{referral_id}/chronology",
    response_model=Chronology,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def chronology(
    referral_id: str,
    user: CurrentUser,
    session: SessionDep,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> Any:
    """Every event in order; `?format=csv` for a spreadsheet; managers also see who read it."""
    row = await visible_referral(session, user, referral_id)
    visible = visible_events(await repository.events_of(session, referral_id), user)
    events = [EventRead(**e.model_dump()) for e in visible]
    if format == "json":
        access = None
        if sees_access_log(user):
            access = [AccessRead(**access_entry(a)) for a in await repository.access_log(session, row.id)]
        await record_read(session, user, row, via="chronology")
        return Chronology(events=events, access=access)
    await record_read(session, user, row, via="chronology_csv")
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

# ---- app -------------------------------------------------------------------------------------


# A read model that stops answering must cost a request seconds, not the operating system's TCP
# timeout (minutes): intake falls back to the token cache and Temporal only once this expires.
DATABASE_CONNECT_TIMEOUT = 3
DATABASE_POOL_TIMEOUT = 5


def database_options(url: str) -> dict[str, Any]:
    """Engine options for the API: short connect and pool waits on PostgreSQL."""
    if not url.startswith("postgresql"):
        return {}
    return {
        "connect_args": {"connect_timeout": DATABASE_CONNECT_TIMEOUT},
        "pool_timeout": DATABASE_POOL_TIMEOUT,
    }


def create_app(
    settings: Settings,
    *,
    secret: str,
    client: Client | None = None,
    engine: AsyncEngine | None = None,
    outbox_enabled: bool = False,
    policy: Policy | None = None,
) -> FastAPI:
    """The app; `client` and `engine` may be given (tests, `referrals dev`), else built at start.

    The policy (its calendar dates the dashboard's working-time ages) is loaded here, once.
    """
    policy = policy or load_policy(settings.policy_file)

    # Read now, so that an unreadable certificate stops `referrals api` with one line at start.
    temporal_options = client_options(settings) if client is None else {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_engine = engine is None
        app.state.engine = engine or create_engine(
            settings.resolved_database_url, **database_options(settings.resolved_database_url)
        )
        app.state.sessions = session_factory(app.state.engine)
        app.state.apart_engine = apart_engine(app.state.engine)
        # Lazy: the API starts (and says 503) while Temporal is down, instead of refusing to start.
        temporal = client or await Client.connect(
            settings.resolved_temporal_address,
            namespace=settings.temporal_namespace,
            data_converter=data_converter(encryption_key=settings.encryption_key, secret=secret),
            lazy=True,
            **temporal_options,
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
    app.state.token_cache = TokenCache()
    # Checked at start: a policy naming a webhook secret that is not set stops the API.
    app.state.case_system_secret = webhook_secret(policy.integrations.early_help)
    app.state.browser_sessions = Sessions(secret, secure=settings.public_url.startswith("https://"))
    install_error_handlers(app)
    calendar = WorkingCalendar(policy.calendar)
    install_pages(
        app,
        site=Site(
            env=build_environment(),
            policy=policy,
            calendar=calendar,
            zone=calendar.zone,
        ),
    )
    app.add_middleware(SecurityHeaders, https=settings.public_url.startswith("https://"))
    app.include_router(router)
    app.include_router(batch_router)
    app.include_router(admin_router)
    app.include_router(notify_callbacks_router)
    app.include_router(early_help_hook_router)
    app.include_router(ops)
    app.include_router(ack_router)
    app.include_router(sign_in_router)
    app.include_router(dashboard_router)
    app.include_router(referral_page_router)
    return app
