"""/ack/{token}: the link in reminder and escalation emails.

GET only shows what would be acknowledged (mail scanners follow links); POST acknowledges.
The signed token is the authority, so these pages need no sign-in (and no CSRF token: a
forged form would need the token itself).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from commands import CommandError, ReferralCommands
from models import repository
from models.enums import Role, Team
from models.payloads import AcknowledgeInput, Actor, HandoffState
from models.tables import Referral
from web.links import AckClaim, AckLinkError, AckLinks
from web.templating import PageError, render

router = APIRouter()

_TEAM_ROLE = {
    Team.EARLY_HELP: Role.EARLY_HELP,
    Team.SOCIAL_CARE: Role.SOCIAL_CARE,
    Team.OTHER_AGENCY: Role.OTHER_AGENCY,
    # Another authority has no users here: its front door acts through the link, recorded as a
    # front-door acknowledgement by the link (the chronology names the authority).
    Team.OTHER_AUTHORITY: Role.FRONT_DOOR,
}
RECORD_ID_MAX = 100
_ELSEWHERE = ("/", "Open the referral from the dashboard")


def _claim(request: Request, token: str) -> AckClaim:
    links = AckLinks(request.app.state.links_secret, request.app.state.settings.public_url)
    try:
        claim = links.check(token)
    except AckLinkError as exc:
        if exc.expired:
            raise PageError(
                410,
                "This link has expired",
                "Acknowledgement links work for 30 days. Sign in and acknowledge the referral from its page.",
                link=_ELSEWHERE,
            ) from None
        raise PageError(
            404,
            "This link is not valid",
            "The link may have been copied wrongly. Sign in and open the referral from the dashboard.",
            link=_ELSEWHERE,
        ) from None
    if claim.team not in _TEAM_ROLE:
        raise PageError(
            404,
            "This link is not valid",
            "Front-door decisions are made from the referral's page, not from an email link.",
            link=_ELSEWHERE,
        )
    return claim


def _already(reference: str) -> PageError:
    return PageError(
        409,
        "Someone has already acted on this referral",
        f"Referral {reference} has already been acknowledged or passed on: this link needs nothing more.",
    )


async def _open_handoff(request: Request, claim: AckClaim) -> tuple[Referral, HandoffState]:
    async with request.app.state.sessions() as session:
        row = await repository.get_referral(session, claim.referral_id)
    if row is None:
        raise PageError(404, "Referral not found", "There is no referral for this link.", link=_ELSEWHERE)
    state = repository.state_of(row)
    handoff = next((h for h in state.handoffs if h.seq == claim.handoff_seq), None)
    if handoff is None or handoff.closed_at is not None or handoff.team != claim.team:
        raise _already(row.reference)
    return row, handoff


def _form(
    request: Request,
    row: Referral,
    handoff: HandoffState,
    *,
    error: str = "",
    record: str = "",
    status: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "ack.html",
        status=status,
        title=f"Acknowledge referral {row.reference}",
        reference=row.reference,
        handoff=handoff,
        errors={"record_id": error} if error else {},
        record=record,
        overdue=handoff.due_at < datetime.now(UTC),
    )


@router.get("/ack/{token}", response_class=HTMLResponse, include_in_schema=False)
async def ack_form(request: Request, token: str) -> HTMLResponse:
    """Show the referral reference, hand-off and deadline with one button (changes nothing)."""
    claim = _claim(request, token)
    row, handoff = await _open_handoff(request, claim)
    return _form(request, row, handoff)


@router.post("/ack/{token}", response_class=HTMLResponse, include_in_schema=False)
async def ack_submit(request: Request, token: str) -> HTMLResponse:
    """Acknowledge the hand-off the link is bound to."""
    claim = _claim(request, token)
    form = await request.form()
    record = str(form.get("record_id") or "").strip()
    error = ""
    if not record:
        error = "Enter the record id from your team's system"
    elif len(record) > RECORD_ID_MAX:
        error = f"Record id must be {RECORD_ID_MAX} characters or fewer"
    elif "\x00" in record:
        error = "Record id must not contain a null character"
    if error:
        row, handoff = await _open_handoff(request, claim)
        return _form(request, row, handoff, error=error, record=record, status=422)
    commands: ReferralCommands = request.app.state.commands
    role = _TEAM_ROLE[claim.team]
    name = "emailed link"
    if claim.team == Team.OTHER_AUTHORITY:
        _, handoff = await _open_handoff(request, claim)
        name = f"emailed link ({handoff.authority_name or handoff.team_name})"
    actor = Actor(user_id=f"ack-link:{claim.referral_id}:{claim.handoff_seq}", name=name, role=role)
    try:
        result = await commands.acknowledge(
            claim.referral_id, AcknowledgeInput(team=claim.team, record_id=record, actor=actor)
        )
    except CommandError as exc:
        if exc.code == "unavailable":
            raise PageError(
                503,
                "Try again shortly",
                "The service is busy and nothing was recorded. Try again in a few seconds.",
            ) from None
        async with request.app.state.sessions() as session:
            current = await repository.get_referral(session, claim.referral_id)
        raise _already(current.reference if current else "this referral") from None
    return render(
        request,
        "ack_done.html",
        title="Referral acknowledged",
        reference=result.state.reference,
        record=record,
    )
