"""The `send_email` activity: an outbox row per idempotency key, then SMTP (or the dev outbox).

Messages carry the referral reference and links, never a child's name or details: email
leaves the secure network.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

import aiosmtplib
import structlog
from aiosmtplib import SMTPResponse
from sqlalchemy import Update, and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from models.enums import DeclineReason, MessageKind, Outcome, Team
from models.payloads import EmailInput, EmailResult
from models.tables import OutboxMessage
from web.links import AckLinks

log = structlog.get_logger(__name__)
LONDON = ZoneInfo("Europe/London")

#: Outbox statuses after which a key is never sent again ("rejected": the mail server refused
#: every recipient for good, so sending again would only be refused again).
FINAL_STATUSES = frozenset({"sent", "stored", "rejected"})
#: How long a claim ("sending") protects a row: longer than any attempt can hold it (the
#: workflow's start-to-close timeout is 30 s and the SDK cancels an attempt that outlives it),
#: short enough that a crashed worker delays the message by about a minute.
CLAIM_LEASE = timedelta(seconds=60)
CLAIM_POLL_SECONDS = 0.2


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


def permanent_rejection(exc: Exception, recipients: list[str]) -> dict[str, tuple[int, str]] | None:
    """Recipients refused for good (address -> SMTP reply) when `exc` is a permanent rejection.

    A 5xx reply to MAIL FROM or DATA refuses the message for everyone; to RCPT TO, for that
    recipient. Any 4xx (try again later), or another error (connection, TLS, authentication),
    is None: Temporal retries it as before.
    """
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = {r.recipient: (r.code, r.message) for r in exc.recipients}
        return refused if refused and all(_permanent(code) for code, _ in refused.values()) else None
    if isinstance(exc, aiosmtplib.SMTPSenderRefused | aiosmtplib.SMTPDataError) and _permanent(exc.code):
        return {address: (exc.code, exc.message) for address in recipients}
    return None


def _permanent(code: int) -> bool:
    return 500 <= code < 600


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
        claim_lease: timedelta = CLAIM_LEASE,
    ) -> None:
        self.sessions = sessions
        self.links = links
        self.mail_from = mail_from
        self.smtp = smtp
        self.claim_lease = claim_lease

    @activity.defn(name="send_email")
    async def send_email(self, input: EmailInput) -> EmailResult:
        """Send one message at most once per key; retried by Temporal until delivered.

        Concurrent attempts of one key (a retry that starts while a timed-out attempt is still
        talking to SMTP) are serialised by a claim on the outbox row: only the attempt whose
        conditional UPDATE moves the row from "pending" to "sending" delivers; the others wait
        for its outcome. A claim older than `claim_lease` (its holder crashed) may be taken over.
        """
        # The heartbeat lets an acknowledgement cancel a send that is waiting to retry.
        activity.heartbeat()
        row = await self._outbox_row(input)
        while row.status not in FINAL_STATUSES:
            if self.smtp is not None:
                claim = await self._claim(row.id)
                if claim is not None:
                    return await self._send_claimed(row, claim)
            elif await self._store(row.id):
                log.info("email.sent", key=row.key, kind=row.kind, status="stored", reference=row.reference)
                return EmailResult(message_id=row.message_id, status="stored", recipients=row.recipients)
            # Another attempt is sending this very message: wait for its outcome.
            await asyncio.sleep(CLAIM_POLL_SECONDS)
            activity.heartbeat()
            row = await self._reload(row.id)
        return _result(row)

    async def _send_claimed(self, row: OutboxMessage, claim: datetime) -> EmailResult:
        try:
            refused = await self._deliver(row)
        except (aiosmtplib.SMTPException, OSError) as exc:
            permanent = permanent_rejection(exc, list(row.recipients))
            if permanent is not None:
                # Final: the same key is never sent again; the workflow reads the rejection
                # from the result and tells someone else instead.
                await self._finish(row.id, _refusal_text(permanent), status="rejected", rejected=permanent)
                log.warning("email.rejected", key=row.key, refused=len(permanent), reference=row.reference)
                return _rejected_result(row, permanent, status="rejected")
            await self._release(row.id, claim, f"{type(exc).__name__}: {exc}"[:2000])
            log.warning("email.delivery_failed", key=row.key, error=type(exc).__name__)
            raise
        except BaseException:
            # Cancelled (an acknowledgement, or the start-to-close timeout): free the claim so a
            # later attempt need not wait for the lease to expire. Whether the server got the
            # message is unknown; a resend carries the same Message-ID.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._release(row.id, claim, None))
            raise
        # Some recipients refused (all refused raises above): the others have the message, so it
        # is not sent again, but the refusal is kept on the row and logged, never dropped silently.
        error = None
        rejected: dict[str, tuple[int, str]] = {}
        if refused:
            replies = {address: (response.code, response.message) for address, response in refused.items()}
            error = _refusal_text(replies)
            rejected = {address: reply for address, reply in replies.items() if _permanent(reply[0])}
            log.warning(
                "email.recipients_refused", key=row.key, refused=len(refused), reference=row.reference
            )
        await self._finish(row.id, error, rejected=rejected or None)
        log.info("email.sent", key=row.key, kind=row.kind, status="sent", reference=row.reference)
        return _rejected_result(row, rejected, status="sent")

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

    async def _deliver(self, row: OutboxMessage) -> dict[str, SMTPResponse]:
        """Hand the message to the SMTP server; the recipients it refused (if it took the rest)."""
        assert self.smtp is not None
        message = EmailMessage()
        message["From"] = self.mail_from
        message["To"] = ", ".join(row.recipients)
        message["Subject"] = row.subject
        message["Message-ID"] = row.message_id
        message["Date"] = format_datetime(row.created_at)
        message["X-Referral-Reference"] = row.reference
        message.set_content(row.body)
        refused, _ = await aiosmtplib.send(
            message,
            hostname=self.smtp.host,
            port=self.smtp.port,
            username=self.smtp.username,
            password=self.smtp.password,
            use_tls=self.smtp.use_tls,
            timeout=20,
        )
        return refused

    async def _reload(self, row_id: int) -> OutboxMessage:
        async with self.sessions() as session:
            row = await session.get(OutboxMessage, row_id)
            assert row is not None
            return row

    async def _claim(self, row_id: int) -> datetime | None:
        """Atomically take the row for delivery; the claim instant, or None if another holds it."""
        now = datetime.now(UTC)
        async with self.sessions() as session, session.begin():
            result = await session.execute(
                _update()
                .where(
                    OutboxMessage.id == row_id,
                    or_(
                        OutboxMessage.status == "pending",
                        and_(
                            OutboxMessage.status == "sending", OutboxMessage.sent_at < now - self.claim_lease
                        ),
                    ),
                )
                # While the row is "sending", sent_at holds the claim instant (the lease).
                .values(status="sending", sent_at=now)
            )
        return now if result.rowcount == 1 else None  # type: ignore[attr-defined]

    async def _release(self, row_id: int, claim: datetime, error: str | None) -> None:
        """Give the claim back after a failed attempt, recording the error."""
        values: dict[str, object] = {
            "status": "pending",
            "sent_at": None,
            "attempts": OutboxMessage.attempts + 1,
        }
        if error is not None:
            values["last_error"] = error
        async with self.sessions() as session, session.begin():
            # Only our own claim: a takeover after the lease expired belongs to another attempt.
            await session.execute(
                _update()
                .where(
                    OutboxMessage.id == row_id,
                    OutboxMessage.status == "sending",
                    OutboxMessage.sent_at == claim,
                )
                .values(**values)
            )

    async def _store(self, row_id: int) -> bool:
        """Dev outbox: mark a pending row stored (nothing leaves the machine); False if not pending."""
        async with self.sessions() as session, session.begin():
            result = await session.execute(
                _update()
                .where(OutboxMessage.id == row_id, OutboxMessage.status == "pending")
                .values(status="stored", attempts=OutboxMessage.attempts + 1, sent_at=datetime.now(UTC))
            )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def _finish(
        self,
        row_id: int,
        error: str | None,
        *,
        status: str = "sent",
        rejected: dict[str, tuple[int, str]] | None = None,
    ) -> None:
        """Mark the row final (sent, or rejected for good), whatever happened to the claim meanwhile."""
        values: dict[str, object] = {
            "status": status,
            "attempts": OutboxMessage.attempts + 1,
            "sent_at": datetime.now(UTC),
        }
        if error is not None:
            values["last_error"] = error[:2000]
        if rejected:
            values["rejected"] = {address: code for address, (code, _) in rejected.items()}
        async with self.sessions() as session, session.begin():
            await session.execute(_update().where(OutboxMessage.id == row_id).values(**values))


def _update() -> Update:
    """An UPDATE of outbox rows by condition (no ORM session synchronisation needed)."""
    return update(OutboxMessage).execution_options(synchronize_session=False)


def _result(row: OutboxMessage) -> EmailResult:
    rejected = {address: (int(code), "") for address, code in (row.rejected or {}).items()}
    return _rejected_result(row, rejected, status=row.status)


def _rejected_result(row: OutboxMessage, rejected: dict[str, tuple[int, str]], *, status: str) -> EmailResult:
    """The result of a final row; rejected recipients in the order the message named them."""
    addresses = [a for a in row.recipients if a in rejected] + [
        a for a in rejected if a not in row.recipients
    ]
    return EmailResult(
        message_id=row.message_id,
        status=status,
        recipients=row.recipients,
        rejected=addresses,
        reply_code=rejected[addresses[0]][0] if addresses else None,
    )


def _refusal_text(replies: dict[str, tuple[int, str]]) -> str:
    return "refused by the mail server: " + "; ".join(
        f"{address} ({code} {message})".rstrip() for address, (code, message) in replies.items()
    )


async def _by_key(session: AsyncSession, key: str) -> OutboxMessage | None:
    return (await session.execute(select(OutboxMessage).where(OutboxMessage.key == key))).scalar_one_or_none()
