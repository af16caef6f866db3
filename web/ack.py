"""/ack/{token}: the link in reminder and escalation emails.

GET only shows what would be acknowledged (mail scanners follow links); POST acknowledges.
"""

from __future__ import annotations

from html import escape
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from commands import CommandError, ReferralCommands
from models import repository
from models.enums import Role, Team
from models.payloads import AcknowledgeInput, Actor
from web.links import AckClaim, AckLinkError, AckLinks

router = APIRouter()

_TEAM_ROLE = {
    Team.EARLY_HELP: Role.EARLY_HELP,
    Team.SOCIAL_CARE: Role.SOCIAL_CARE,
    Team.OTHER_AGENCY: Role.OTHER_AGENCY,
}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)} - referral-tracker</title></head>"
        f"<body><main><h1>{escape(title)}</h1>{body}</main></body></html>"
    )
    return HTMLResponse(html, status_code=status)


def _claim(request: Request, token: str) -> AckClaim | HTMLResponse:
    links = AckLinks(request.app.state.links_secret, request.app.state.settings.public_url)
    try:
        return links.check(token)
    except AckLinkError as exc:
        title = "This link has expired" if exc.expired else "This link is not valid"
        return _page(
            title, "<p>Open the referral from the dashboard instead.</p>", 410 if exc.expired else 404
        )


@router.get("/ack/{token}", response_class=HTMLResponse)
async def ack_form(request: Request, token: str) -> HTMLResponse:
    """Show the referral reference, hand-off and deadline with one button."""
    claim = _claim(request, token)
    if isinstance(claim, HTMLResponse):
        return claim
    async with request.app.state.sessions() as session:
        row = await repository.get_referral(session, claim.referral_id)
    if row is None:
        return _page("Referral not found", "<p>No such referral.</p>", 404)
    state = repository.state_of(row)
    handoff = next((h for h in state.handoffs if h.seq == claim.handoff_seq), None)
    if handoff is None or handoff.closed_at is not None:
        return _page(
            "Already acknowledged",
            f"<p>Referral {escape(row.reference)} needs nothing more from this link.</p>",
            409,
        )
    return _page(
        f"Acknowledge referral {row.reference}",
        f"<p>{escape(handoff.team_name)} is asked to record this referral. "
        f"It is due by {escape(handoff.due_at.isoformat())}.</p>"
        f"<form method='post'><label for='record_id'>Your record id</label> "
        f"<input id='record_id' name='record_id' required maxlength='100'> "
        f"<button type='submit'>Acknowledge</button></form>",
    )


@router.post("/ack/{token}", response_class=HTMLResponse)
async def ack_submit(
    request: Request, token: str, record_id: Annotated[str, Form(min_length=1, max_length=100)]
) -> HTMLResponse:
    """Acknowledge the hand-off the link is bound to."""
    claim = _claim(request, token)
    if isinstance(claim, HTMLResponse):
        return claim
    role = _TEAM_ROLE.get(claim.team)
    if role is None:
        return _page(
            "This link is not valid", "<p>Front-door decisions are made from the dashboard.</p>", 404
        )
    record = record_id.strip()
    if not record or "\x00" in record:
        # Blank after trimming (or unstorable) would fail AcknowledgeInput's own checks: a 500.
        return _page("Enter your record id", "<p>Go back and enter the record id you created.</p>", 422)
    commands: ReferralCommands = request.app.state.commands
    actor = Actor(user_id=f"ack-link:{claim.referral_id}:{claim.handoff_seq}", name="emailed link", role=role)
    try:
        result = await commands.acknowledge(
            claim.referral_id, AcknowledgeInput(team=claim.team, record_id=record, actor=actor)
        )
    except CommandError as exc:
        if exc.code == "unavailable":
            return _page("Try again shortly", "<p>The service is busy; nothing was recorded.</p>", 503)
        return _page("Already acknowledged", "<p>Someone has already acted on this referral.</p>", 409)
    return _page(
        "Acknowledged",
        f"<p>Referral {escape(result.state.reference)} is recorded as {escape(record)}.</p>",
    )
