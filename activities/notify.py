"""The `send_email` activity: referral email composed here, delivered through `activities.outbox`.

Messages carry the referral reference and links, never a child's name or details: email
leaves the secure network.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.outbox import CLAIM_LEASE, Outbox, SmtpTarget, message_id
from models.enums import TRANSFERRED, DeclineReason, MessageKind, Outcome, Team
from models.payloads import EmailInput, EmailResult
from models.tables import OutboxMessage
from web.links import AckLinks

__all__ = ["NotifyActivities", "SmtpTarget", "compose", "message_id"]

log = structlog.get_logger(__name__)
LONDON = ZoneInfo("Europe/London")


def _when(instant: datetime | None) -> str:
    if instant is None:
        return "-"
    return instant.astimezone(LONDON).strftime("%a %d %b %Y %H:%M")


def compose(input: EmailInput, links: AckLinks) -> tuple[str, str]:
    """Subject and plain-text body of a message; both free of personal data."""
    ref, team, due = input.reference, input.team_name, _when(input.due_at)
    page = links.referral_url(input.referral_id)
    if input.kind == MessageKind.REMINDER:
        subject = f"{ref} reminder: {team} to record this referral by {due}"
        lines = [
            f"Referral {ref} is waiting for {team} to record it.",
            f"It is due by {due}.",
            "",
            f"Record it here: {links.ack_url(input.referral_id, input.handoff_seq, input.team)}",
        ]
    elif input.kind == MessageKind.ESCALATION:
        level = f" (repeat {input.repeat})" if input.repeat else ""
        subject = f"{ref} escalation: {team} has not acknowledged, due {due}{level}"
        lines = [
            f"Referral {ref} has not been acknowledged by {team}.",
            f"It was due by {due} and nobody has recorded it since.",
            "Under the local escalation policy you are being told so that someone acts.",
            "",
            f"{team} can acknowledge it here: "
            f"{links.ack_url(input.referral_id, input.handoff_seq, input.team)}",
        ]
    else:
        subject = f"{ref} outcome: {_outcome_text(input)}"
        lines = [f"Referral {ref}: {_outcome_text(input)}."]
    if input.team == Team.OTHER_AUTHORITY and input.kind != MessageKind.OUTCOME:
        # The other authority has no sign-in here: the link above is how it acknowledges.
        lines += [
            "",
            "This referral was transferred to you because the child lives in your area. Our front",
            "door will send you its details by your usual secure route; record it in your own",
            "system and give that record's id at the link above.",
        ]
    lines += ["", f"Referral page (sign-in needed): {page}", "", "This message holds no personal details."]
    if input.undelivered_to:
        # A fallback copy says whose mail server refused it, so the reader can reach them another way.
        subject = f"{subject} [undelivered, fallback copy]"
        lines = [
            f"The mail server refused this message for {', '.join(input.undelivered_to)}.",
            "You receive it instead: please make sure they hear of it another way.",
            "",
            *lines,
        ]
    return subject, "\n".join(lines) + "\n"


def _outcome_text(input: EmailInput) -> str:
    result = input.result or ""
    if input.team == Team.FRONT_DOOR:
        labels = {
            Outcome.EARLY_HELP.value: "the front door has passed it to Early Help",
            Outcome.SOCIAL_CARE.value: "the front door has passed it to children's social care",
            Outcome.OTHER_AGENCY.value: "the front door has passed it to another agency",
            Outcome.NO_FURTHER_ACTION.value: "the front door decided no further action",
            TRANSFERRED: "the front door has transferred it to "
            + (input.authority_name or "another local authority"),
        }
        return labels.get(result, f"the front door decided {result}")
    if result in {r.value for r in DeclineReason}:
        return (
            f"{input.team_name} declined it ({result.replace('_', ' ')}); back to the front door for review"
        )
    return f"{input.team_name} recorded it as {input.record_id}"


class NotifyActivities:
    """Sends referral email through the outbox; built by the worker with its settings."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        links: AckLinks,
        mail_from: str,
        smtp: SmtpTarget | None,
        claim_lease: timedelta = CLAIM_LEASE,
    ) -> None:
        self.links = links
        self.outbox = Outbox(sessions, mail_from=mail_from, smtp=smtp, claim_lease=claim_lease)

    @activity.defn(name="send_email")
    async def send_email(self, input: EmailInput) -> EmailResult:
        """Send one message at most once per key (see `activities.outbox`); retried by Temporal
        until delivered or refused for good."""
        # The heartbeat lets an acknowledgement cancel a send that is waiting to retry.
        activity.heartbeat()

        async def build(_: AsyncSession) -> OutboxMessage:
            subject, body = compose(input, self.links)
            return OutboxMessage(
                referral_id=input.referral_id,
                reference=input.reference,
                kind=input.kind.value,
                recipients=list(input.recipients),
                subject=subject,
                body=body,
            )

        row = await self.outbox.row(input.key, build)
        assert row is not None
        return await self.outbox.send(row)
