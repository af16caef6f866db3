"""`/referrals/{id}`: the referral, its hand-offs, its chronology (and CSV), and the actions of each role.

Actions are forms posted back here; they go through ReferralCommands exactly like the JSON API.
Success redirects (303) to the page with a banner; a referral someone else has acted on is a
409 page that says so; invalid input shows the page again with a GOV.UK error summary (422).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from temporalio.service import RPCError

from commands import CommandError, ReferralCommands
from models import repository
from models.enums import RECEIVING_ROLES, TRANSFERRED, DeclineReason, Outcome, Role, Status, Team
from models.payloads import AcknowledgeInput, DecisionInput, DeclineInput, TransferInput, UpdateResult
from models.policy import Policy
from models.schemas import ReferralRead
from models.tables import Referral, User
from web.access import (
    REFERRAL_ROLES,
    Denied,
    access_entry,
    record_read,
    redact,
    referral_for,
    sees_access_log,
    sees_details,
    visible_events,
)
from web.chronology import describe, to_csv
from web.dashboard import RAG_TAG, csv_cell
from web.deps import SessionDep, actor_of, commands_of
from web.session import PageUser, checked_form, require_role
from web.templating import PageError, format_instant, local_iso, render, site_of

router = APIRouter()

#: Who may open a referral's page (police: their own force's only; teams: what was handed to them).
PAGE_ROLES = REFERRAL_ROLES

DENIED_PAGE_MESSAGES = {
    Denied.ROLE: "Your role does not see referrals.",
    Denied.OTHER_FORCE: "This referral belongs to another police force.",
    Denied.NOT_HANDED: "This referral has not been handed to your team.",
}
ACCESS_VIA = {
    "page": "This page",
    "page_csv": "Chronology spreadsheet",
    "api": "API",
    "chronology": "API (chronology)",
    "chronology_csv": "API (chronology spreadsheet)",
}
CONFLICT = "Someone else has already acted on this referral"
DONE = {
    "decision": "Decision recorded",
    "acknowledged": "Referral acknowledged",
    "declined": "Referral declined and returned to the front door",
    "transferred": "Referral transferred to another authority",
    "recorded": "The other authority's acknowledgement is recorded",
}
OUTCOME_CHOICES = [
    (Outcome.EARLY_HELP.value, "Early Help"),
    (Outcome.SOCIAL_CARE.value, "Children's social care"),
    (Outcome.OTHER_AGENCY.value, "Another agency"),
    (Outcome.NO_FURTHER_ACTION.value, "No further action"),
]
DECLINE_CHOICES = [
    (DeclineReason.CONSENT_DECLINED.value, "Consent declined"),
    (DeclineReason.NOT_APPROPRIATE.value, "Not appropriate for Early Help"),
]
#: How a closed hand-off's result and a referral's outcome read on the page.
RESULT_LABELS = {
    **dict(OUTCOME_CHOICES),
    "acknowledged": "Acknowledged",
    **{value: f"Declined: {text.lower()}" for value, text in DECLINE_CHOICES},
    TRANSFERRED: "Transferred to another authority",
}
NOTE_MAX = 2000
RECORD_ID_MAX = 100


async def visible(session: AsyncSession, user: User, referral_id: str) -> Referral:
    """The referral if this user may see it: a 404 page for unknown, 403 for another force's."""
    require_role(user, PAGE_ROLES, "may not see referrals")
    found = await referral_for(session, user, referral_id)
    if found == Denied.NOT_FOUND:
        raise PageError(
            404,
            "Referral not found",
            "There is no referral at this address.",
            link=("/", "Go to the dashboard"),
        )
    if isinstance(found, Denied):
        raise PageError(403, "You cannot see this referral", DENIED_PAGE_MESSAGES[found])
    return found


def actions_for(user: User, read: ReferralRead, policy: Policy | None = None) -> dict[str, bool]:
    """Which forms this user gets on this referral now.

    The front door also transfers a referral awaiting its decision (when the policy lists other
    authorities), and records the other authority's acknowledgement of a transfer.
    """
    role = Role(user.role)
    team = RECEIVING_ROLES.get(role)
    decide = (
        role == Role.FRONT_DOOR
        and read.status == Status.AWAITING_DECISION
        and read.awaiting_team == Team.FRONT_DOOR
    )
    acknowledge = team is not None and read.awaiting_team == team
    return {
        "decide": decide,
        "transfer": decide and policy is not None and bool(policy.authorities),
        "acknowledge": acknowledge,
        "record_transfer": role == Role.FRONT_DOOR and read.awaiting_team == Team.OTHER_AUTHORITY,
        "decline": acknowledge and role == Role.EARLY_HELP,
    }


def awaiting_text(read: ReferralRead, team_name: Callable[[str | None], str]) -> str:
    """Who the referral is waiting for: another authority by its name."""
    current = read.handoffs[-1] if read.handoffs and read.handoffs[-1].closed_at is None else None
    if current is not None and current.team == Team.OTHER_AUTHORITY:
        return f"{current.authority_name or current.team_name} (another authority)"
    return team_name(read.awaiting_team.value if read.awaiting_team else None) or "Nobody"


async def _page(
    request: Request,
    session: AsyncSession,
    user: User,
    referral_id: str,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    banner: str | None = None,
    conflict: str | None = None,
) -> HTMLResponse:
    site = site_of(request)
    row = await visible(session, user, referral_id)
    now = datetime.now(UTC)
    read = redact(ReferralRead.build(repository.state_of(row), now=now), user)
    events = visible_events(await repository.events_of(session, row.id), user)
    entries = [describe(e, site.team_name, lambda dt: format_instant(dt, site.zone)) for e in events]
    details = row.details if sees_details(user) else None
    access = None
    if sees_access_log(user):
        access = [access_entry(a) for a in await repository.access_log(session, row.id)]
    await record_read(session, user, row, via="page")
    return render(
        request,
        "referral.html",
        status=status,
        title=f"Referral {row.reference}",
        bodyClasses="app-wide",
        referral=read,
        submitted_by=row.submitted_by,
        show_details=sees_details(user),
        details=details,
        purged=row.purged_at is not None,
        referrer_undeliverable=row.referrer_undeliverable,
        access=access,
        access_via=ACCESS_VIA,
        entries=entries,
        actions=actions_for(user, read, site.policy),
        awaiting=awaiting_text(read, site.team_name),
        authority_choices=[(code, a.name) for code, a in site.policy.authorities.items()],
        errors=errors or {},
        values=values or {},
        banner=banner,
        conflict=conflict,
        rag_tag=RAG_TAG,
        outcome_choices=OUTCOME_CHOICES,
        result_labels=RESULT_LABELS,
        decline_choices=DECLINE_CHOICES,
        now=now,
    )


@router.get("/referrals/{referral_id}", response_class=HTMLResponse, include_in_schema=False)
async def referral_page(request: Request, referral_id: str, user: PageUser, session: SessionDep) -> Response:
    """The referral, its hand-offs and chronology, and this user's actions."""
    banner = DONE.get(request.query_params.get("done") or "")
    return await _page(request, session, user, referral_id, banner=banner)


@router.get("/referrals/{referral_id}/chronology.csv", include_in_schema=False)
async def chronology_csv(request: Request, referral_id: str, user: PageUser, session: SessionDep) -> Response:
    """Every event in order, as a spreadsheet for a case review."""
    site = site_of(request)
    row = await visible(session, user, referral_id)
    events = visible_events(await repository.events_of(session, row.id), user)
    await record_read(session, user, row, via="page_csv")
    entries = [describe(e, site.team_name, lambda dt: format_instant(dt, site.zone)) for e in events]
    body = to_csv(entries, lambda dt: local_iso(dt, site.zone), csv_cell)
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{row.reference}-chronology.csv"'},
    )


#: The input of one page action (a decision, an acknowledgement, a decline).
P = TypeVar("P", DecisionInput, AcknowledgeInput, DeclineInput, TransferInput)


# ---- actions ---------------------------------------------------------------------------------


def _note(form: FormData, field: str, errors: dict[str, str], values: dict[str, str]) -> str:
    note = str(form.get("note") or "").strip()
    values[field] = note
    if len(note) > NOTE_MAX:
        errors[field] = f"Note must be {NOTE_MAX:,} characters or fewer"
    elif "\x00" in note:
        errors[field] = "Note must not contain a null character"
    return note


async def _run(
    request: Request,
    session: AsyncSession,
    user: User,
    referral_id: str,
    command: Callable[[], Awaitable[UpdateResult]],
    done: str,
) -> Response:
    await session.commit()  # hold no transaction while the workflow answers
    try:
        await command()
    except CommandError as exc:
        if exc.code == "unavailable":
            raise _busy() from None
        if exc.code == "not_found":
            raise PageError(404, "Referral not found", "There is no referral at this address.") from None
        row = await repository.get_referral(session, referral_id)
        if row is not None:
            await session.refresh(row)  # show the referral as the other person left it
        return await _page(request, session, user, referral_id, status=409, conflict=CONFLICT)
    except RPCError:
        raise _busy() from None
    except RuntimeError as exc:
        if not str(exc).startswith("Failed client connect"):
            raise
        raise _busy() from None
    return RedirectResponse(f"/referrals/{referral_id}?done={done}", status_code=303)


def _busy() -> PageError:
    return PageError(
        503, "Try again shortly", "The service is busy and nothing was recorded. Try again in a few seconds."
    )


async def _invalid(
    request: Request,
    session: AsyncSession,
    user: User,
    referral_id: str,
    errors: dict[str, str],
    values: dict[str, str],
) -> Response:
    return await _page(request, session, user, referral_id, status=422, errors=errors, values=values)


async def _act(
    request: Request,
    session: AsyncSession,
    user: User,
    referral_id: str,
    form: tuple[dict[str, str], dict[str, str]],
    build: Callable[[], P],
    fields: dict[str, str],
    send: Callable[[ReferralCommands, P], Awaitable[UpdateResult]],
    done: str,
) -> Response:
    """The shape every action shares: the form's own errors, then the command's, then the command.

    `form` is (errors, values) as the handler read them; `build` makes the command's input (its
    validation errors are shown against `fields`, input field -> form field); `send` runs it.
    """
    errors, values = form
    if errors:
        return await _invalid(request, session, user, referral_id, errors, values)
    try:
        payload = build()
    except ValidationError as exc:
        return await _invalid(request, session, user, referral_id, _validation_errors(exc, fields), values)
    commands = commands_of(request)
    return await _run(request, session, user, referral_id, lambda: send(commands, payload), done)


def _validation_errors(exc: ValidationError, fields: dict[str, str]) -> dict[str, str]:
    errors: dict[str, str] = {}
    for err in exc.errors():
        name = str(err["loc"][0]) if err.get("loc") else ""
        errors.setdefault(fields.get(name, next(iter(fields.values()))), str(err.get("msg", "Not valid")))
    return errors


@router.post("/referrals/{referral_id}/decision", include_in_schema=False)
async def post_decision(request: Request, referral_id: str, user: PageUser, session: SessionDep) -> Response:
    """The front door's decision, from the page."""
    form = await checked_form(request)
    require_role(user, {Role.FRONT_DOOR}, "may not record front-door decisions")
    await visible(session, user, referral_id)
    errors: dict[str, str] = {}
    values: dict[str, str] = {"outcome": str(form.get("outcome") or "")}
    outcome = values["outcome"]
    if outcome not in {o.value for o in Outcome}:
        errors["outcome"] = "Select what happens next"
    note = _note(form, "decision-note", errors, values)
    return await _act(
        request,
        session,
        user,
        referral_id,
        (errors, values),
        lambda: DecisionInput(outcome=Outcome(outcome), note=note, actor=actor_of(user)),
        {"outcome": "outcome", "note": "decision-note"},
        lambda commands, decision: commands.decide(referral_id, decision),
        "decision",
    )


@router.post("/referrals/{referral_id}/acknowledgement", include_in_schema=False)
async def post_acknowledgement(
    request: Request, referral_id: str, user: PageUser, session: SessionDep
) -> Response:
    """A receiving team records the referral with its own record id."""
    form = await checked_form(request)
    require_role(user, {*RECEIVING_ROLES, Role.FRONT_DOOR}, "may not acknowledge referrals")
    await visible(session, user, referral_id)
    errors: dict[str, str] = {}
    record = str(form.get("record_id") or "").strip()
    values: dict[str, str] = {"record_id": record}
    if not record:
        errors["record_id"] = (
            "Enter the record id the other authority gave you"
            if user.role == Role.FRONT_DOOR.value
            else "Enter the record id from your team's system"
        )
    elif len(record) > RECORD_ID_MAX:
        errors["record_id"] = f"Record id must be {RECORD_ID_MAX} characters or fewer"
    elif "\x00" in record:
        errors["record_id"] = "Record id must not contain a null character"
    note = _note(form, "ack-note", errors, values)
    # The front door records another authority's acknowledgement of a transfer (e.g. by phone).
    team = RECEIVING_ROLES.get(Role(user.role), Team.OTHER_AUTHORITY)
    return await _act(
        request,
        session,
        user,
        referral_id,
        (errors, values),
        lambda: AcknowledgeInput(team=team, record_id=record, note=note, actor=actor_of(user)),
        {"record_id": "record_id", "note": "ack-note"},
        lambda commands, ack: commands.acknowledge(referral_id, ack),
        "recorded" if team == Team.OTHER_AUTHORITY else "acknowledged",
    )


@router.post("/referrals/{referral_id}/transfer", include_in_schema=False)
async def post_transfer(request: Request, referral_id: str, user: PageUser, session: SessionDep) -> Response:
    """The front door transfers the referral to another authority's front door, from the page."""
    form = await checked_form(request)
    require_role(user, {Role.FRONT_DOOR}, "may not transfer referrals")
    await visible(session, user, referral_id)
    policy = site_of(request).policy
    errors: dict[str, str] = {}
    values: dict[str, str] = {"authority": str(form.get("authority") or "")}
    code = values["authority"]
    if code not in policy.authorities:
        errors["authority"] = "Select the authority the child lives in"
    note = _note(form, "transfer-note", errors, values)
    return await _act(
        request,
        session,
        user,
        referral_id,
        (errors, values),
        lambda: TransferInput(
            authority=code, authority_name=policy.authority(code).name, note=note, actor=actor_of(user)
        ),
        {"authority": "authority", "note": "transfer-note"},
        lambda commands, transfer: commands.transfer(referral_id, transfer),
        "transferred",
    )


@router.post("/referrals/{referral_id}/decline", include_in_schema=False)
async def post_decline(request: Request, referral_id: str, user: PageUser, session: SessionDep) -> Response:
    """Early Help declines; the referral goes back to the front door."""
    form = await checked_form(request)
    require_role(user, {Role.EARLY_HELP}, "may not decline referrals")
    await visible(session, user, referral_id)
    errors: dict[str, str] = {}
    values: dict[str, str] = {"reason": str(form.get("reason") or "")}
    reason = values["reason"]
    if reason not in {r.value for r in DeclineReason}:
        errors["reason"] = "Select why you are declining this referral"
    note = _note(form, "decline-note", errors, values)
    return await _act(
        request,
        session,
        user,
        referral_id,
        (errors, values),
        lambda: DeclineInput(reason=DeclineReason(reason), note=note, actor=actor_of(user)),
        {"reason": "reason", "note": "decline-note"},
        lambda commands, decline: commands.decline(referral_id, decline),
        "declined",
    )
