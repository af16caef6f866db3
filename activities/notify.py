"""The `send_email` activity: an outbox row per idempotency key, then SMTP (or the dev outbox).

Messages carry the referral reference and links, never a child's name or details: email
leaves the secure network.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

import aiosmtplib
import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from models.enums import DeclineReason, MessageKind, Outcome, Team
from models.payloads import EmailInput, EmailResult
from models.tables import OutboxMessage
from web.links import AckLinks

log = structlog.get_logger(__name__)
LONDON = ZoneInfo("Europe/London")


@dataclass(frozen=True)
class SmtpTarget:
    """Where to deliver: parsed from REFERRALS_SMTP_URL."""

    host: str
    port: int
    use_tls: bool
    username: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> SmtpTarget:
        """Parse smtp://host:port or smtps://user:pass@host:port."""
        parts = urlsplit(url)
        tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or (465 if tls else 25),
            use_tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


def message_id(key: str, mail_from: str) -> str:
    """A Message-ID derived from the idempotency key, so a resend is recognisable."""
    domain = mail_from.rsplit("@", 1)[-1] or "localhost"
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:40]}@{domain}>"


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
    lines += ["", f"Referral page (sign-in needed): {page}", "", "This message holds no personal details."]
    return subject, "\n".join(lines) + "\n"


def _outcome_text(input: EmailInput) -> str:
    result = input.result or ""
    if input.team == Team.FRONT_DOOR:
        labels = {
            Outcome.EARLY_HELP.value: "the front door has passed it to Early Help",
            Outcome.SOCIAL_CARE.value: "the front door has passed it to children's social care",
            Outcome.OTHER_AGENCY.value: "the front door has passed it to another agency",
            Outcome.NO_FURTHER_ACTION.value: "the front door decided no further action",
        }
        return labels.get(result, f"the front door decided {result}")
    if result in {r.value for r in DeclineReason}:
        return (
            f"{input.team_name} declined it ({result.replace('_', ' ')}); back to the front door for review"
        )
    return f"{input.team_name} recorded it as {input.record_id}"


class NotifyActivities:
    """Sends email through the outbox; built by the worker with its settings."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        links: AckLinks,
        mail_from: str,
        smtp: SmtpTarget | None,
    ) -> None:
        self.sessions = sessions
        self.links = links
        self.mail_from = mail_from
        self.smtp = smtp

    @activity.defn(name="send_email")
    async def send_email(self, input: EmailInput) -> EmailResult:
        """Send one message at most once per key; retried by Temporal until delivered."""
        # The heartbeat lets an acknowledgement cancel a send that is waiting to retry.
        activity.heartbeat()
        row = await self._outbox_row(input)
        if row.status in {"sent", "stored"}:
            return EmailResult(message_id=row.message_id, status=row.status, recipients=row.recipients)
        if self.smtp is None:
            return await self._finish(row, "stored")
        try:
            await self._deliver(row)
        except (aiosmtplib.SMTPException, OSError) as exc:
            async with self.sessions() as session, session.begin():
                stored = await session.get(OutboxMessage, row.id)
                assert stored is not None
                stored.attempts += 1
                stored.last_error = f"{type(exc).__name__}: {exc}"[:2000]
            log.warning("email.delivery_failed", key=input.key, error=type(exc).__name__)
            raise
        return await self._finish(row, "sent")

    async def _outbox_row(self, input: EmailInput) -> OutboxMessage:
        async with self.sessions() as session:
            row = await _by_key(session, input.key)
            if row is not None:
                return row
            subject, body = compose(input, self.links)
            row = OutboxMessage(
                key=input.key,
                referral_id=input.referral_id,
                reference=input.reference,
                kind=input.kind.value,
                recipients=list(input.recipients),
                subject=subject,
                body=body,
                message_id=message_id(input.key, self.mail_from),
                status="pending",
                attempts=0,
                created_at=datetime.now(UTC),
            )
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:
                # Another attempt of the same activity got there first; use its row.
                await session.rollback()
                existing = await _by_key(session, input.key)
                assert existing is not None
                return existing
            return row

    async def _deliver(self, row: OutboxMessage) -> None:
        assert self.smtp is not None
        message = EmailMessage()
        message["From"] = self.mail_from
        message["To"] = ", ".join(row.recipients)
        message["Subject"] = row.subject
        message["Message-ID"] = row.message_id
        message["Date"] = format_datetime(row.created_at)
        message["X-Referral-Reference"] = row.reference
        message.set_content(row.body)
        await aiosmtplib.send(
            message,
            hostname=self.smtp.host,
            port=self.smtp.port,
            username=self.smtp.username,
            password=self.smtp.password,
            use_tls=self.smtp.use_tls,
            timeout=20,
        )

    async def _finish(self, row: OutboxMessage, status: str) -> EmailResult:
        async with self.sessions() as session, session.begin():
            stored = await session.get(OutboxMessage, row.id)
            assert stored is not None
            stored.status = status
            stored.attempts += 1
            stored.sent_at = datetime.now(UTC)
        log.info("email.sent", key=row.key, kind=row.kind, status=status, reference=row.reference)
        return EmailResult(message_id=row.message_id, status=status, recipients=row.recipients)


async def _by_key(session: AsyncSession, key: str) -> OutboxMessage | None:
    return (await session.execute(select(OutboxMessage).where(OutboxMessage.key == key))).scalar_one_or_none()
