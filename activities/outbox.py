"""The outbox: every message is a row keyed by its idempotency key, delivered by SMTP (or GOV.UK
Notify) at most once per key as far as the channel allows.

Both the referral emails (`activities.notify`) and the reconciler's report go through `Outbox`:
the row is written once, an attempt claims it with a conditional UPDATE, delivers, and records
the outcome. Concurrent attempts of one key (a retry that starts while a timed-out attempt is still
talking to SMTP) wait for the holder's outcome; a claim older than the lease (its holder crashed)
may be taken over.

SMTP cannot tell a lost "250 OK" from a failure (RFC 1047): when an attempt dies or fails after
handing the message's data to the server, nobody knows whether the server has it. Such an
attempt is counted on the row (`resends`), the next attempt sends again with the same Message-ID,
and the chaos suite checks that no message was ever delivered more often than that count allows.
Everything before DATA (connection, EHLO, MAIL, RCPT) is known not to have delivered anything.

With GOV.UK Notify (`activities.notify_channel`) each recipient is one request, and each
notification id is recorded on the row (`provider_ids`) as soon as Notify answers, so a retry
sends only to the recipients not yet taken. A request whose answer was lost counts in `resends`
like SMTP's; before sending again, the next attempt asks Notify which notifications carry the
message's key as their reference and records those instead of sending twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib
import httpx
import structlog
from sqlalchemy import Update, and_, case, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.notify_channel import Later, NotifyChannel, Refused, Sent
from models.payloads import EmailResult
from models.tables import OutboxMessage

log = structlog.get_logger(__name__)


class _CachedHeaderRegistry(HeaderRegistry):
    """The standard library's header classes, made once per header name.

    `HeaderRegistry` builds a new class for every header of every message (and aiosmtplib's
    flattening asks again): in an escalation storm that was a visible share of the worker's
    CPU, and every class is more for the cyclic collector to walk. The classes it builds are
    the same each time, so caching them changes nothing in the messages (tested byte for byte).
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:  # two threads may both build it: either class will do
            cls = self._classes[key] = super().__getitem__(key)
        return cls


#: email.policy.default with the cached header classes: what `_message` builds messages with.
MESSAGE_POLICY = default_policy.clone(header_factory=_CachedHeaderRegistry())


#: Outbox statuses after which a key is never sent again ("rejected": the mail server refused
#: every recipient for good, so sending again would only be refused again).
FINAL_STATUSES = frozenset({"sent", "stored", "rejected"})
#: How long a claim ("sending") protects a row: longer than any attempt can hold it (activities
#: have start-to-close timeouts of 30 s and the SDK cancels an attempt that outlives its own),
#: short enough that a crashed worker delays the message by about a minute.
CLAIM_LEASE = timedelta(seconds=60)
CLAIM_POLL_SECONDS = 0.2
SMTP_TIMEOUT = 20.0
#: Of an attempt's 30 s, how long Notify requests may take (one per recipient): the rest is
#: left for recording, so an attempt is never cancelled mid-request by its own timeout.
NOTIFY_ATTEMPT_BUDGET = 20.0
#: How long a delivered message's record is retried while the database refuses it.
RECORD_PATIENCE = timedelta(seconds=20)


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


class _Smtp(aiosmtplib.SMTP):
    """An SMTP client that remembers whether the message's data reached the server."""

    data_started = False

    async def data(self, message: str | bytes, /, **options: Any) -> Any:
        self.data_started = True
        return await super().data(message, **options)


class Outbox:
    """Rows and their delivery; one per worker, shared by every activity that sends email."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        mail_from: str,
        smtp: SmtpTarget | None,
        claim_lease: timedelta = CLAIM_LEASE,
        notify: NotifyChannel | None = None,
    ) -> None:
        self.sessions = sessions
        self.mail_from = mail_from
        self.smtp = smtp
        self.claim_lease = claim_lease
        #: GOV.UK Notify, when configured: used instead of SMTP.
        self.notify = notify

    # ---- rows ----------------------------------------------------------------------------

    async def row(
        self, key: str, build: Callable[[AsyncSession], Awaitable[OutboxMessage | None]]
    ) -> OutboxMessage | None:
        """The row for `key`, written once: `build` makes it (None: nothing to send)."""
        async with self.sessions() as session:
            existing = await _by_key(session, key)
            if existing is not None:
                return existing
            row = await build(session)
            if row is None:
                return None
            row.key = key
            row.message_id = message_id(key, self.mail_from)
            row.status = "pending"
            row.attempts = 0
            row.resends = 0
            row.created_at = datetime.now(UTC)
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:
                # Another attempt of the same activity got there first; use its row.
                await session.rollback()
                return await _by_key(session, key)
            return row

    # ---- delivery ------------------------------------------------------------------------

    async def send(self, row: OutboxMessage) -> EmailResult:
        """Deliver `row` unless it is final; wait while another attempt holds its claim."""
        while row.status not in FINAL_STATUSES:
            if self.notify is not None or self.smtp is not None:
                claim = await self._claim(row.id)
                if claim is not None:
                    if self.notify is not None:
                        return await self._notify_claimed(row.id, claim)
                    return await self._send_claimed(row, claim)
            elif await self._store(row.id):
                log.info("email.sent", key=row.key, kind=row.kind, status="stored", reference=row.reference)
                return EmailResult(message_id=row.message_id, status="stored", recipients=row.recipients)
            # Another attempt is sending this very message: wait for its outcome.
            await asyncio.sleep(CLAIM_POLL_SECONDS)
            _heartbeat()
            row = await self._reload(row.id)
        return _result(row)

    async def _send_claimed(self, row: OutboxMessage, claim: datetime) -> EmailResult:
        assert self.smtp is not None
        client = _Smtp(
            hostname=self.smtp.host,
            port=self.smtp.port,
            username=self.smtp.username,
            password=self.smtp.password,
            use_tls=self.smtp.use_tls,
            timeout=SMTP_TIMEOUT,
        )
        try:
            await client.connect()
            refused, _ = await client.send_message(self._message(row))
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            permanent = permanent_rejection(exc, list(row.recipients))
            if permanent is not None:
                # Final: the same key is never sent again; the caller reads the rejection from
                # the result and tells someone else instead.
                await self._record(row.id, _refusal_text(permanent), status="rejected", rejected=permanent)
                log.warning("email.rejected", key=row.key, refused=len(permanent), reference=row.reference)
                return _rejected_result(row, permanent, status="rejected")
            # A reply of the server's (a 4xx to DATA) is a known "not taken"; a connection lost
            # or timed out after the data went is not.
            unknown = client.data_started and not isinstance(exc, aiosmtplib.SMTPResponseException)
            failure = f"{type(exc).__name__}: {exc}"[:2000]
            await self._release(row, claim, failure, uncertain=unknown)
            log.warning(
                "email.delivery_failed", key=row.key, error=type(exc).__name__, outcome_unknown=unknown
            )
            raise
        except BaseException:
            # Cancelled (an acknowledgement, or the start-to-close timeout): free the claim so a
            # later attempt need not wait for the lease to expire. Whether the server got the
            # message is unknown once its data was sent; a resend carries the same Message-ID.
            client.close()
            with contextlib.suppress(Exception):
                await asyncio.shield(self._release(row, claim, None, uncertain=client.data_started))
            raise
        # Delivered: record it before anything else (even the polite QUIT), so the window in
        # which a crash leaves a delivered message unrecorded is as short as it can be.
        error: str | None = None
        rejected: dict[str, tuple[int, str]] = {}
        if refused:
            # Some recipients refused (all refused raises above): the others have the message, so
            # it is not sent again, but the refusal is kept on the row and logged, never dropped.
            replies = {address: (response.code, response.message) for address, response in refused.items()}
            error = _refusal_text(replies)
            rejected = {address: reply for address, reply in replies.items() if _permanent(reply[0])}
            log.warning(
                "email.recipients_refused", key=row.key, refused=len(refused), reference=row.reference
            )
        await asyncio.shield(self._record(row.id, error, rejected=rejected or None))
        with contextlib.suppress(Exception):
            await client.quit()
        client.close()
        log.info("email.sent", key=row.key, kind=row.kind, status="sent", reference=row.reference)
        return _rejected_result(row, rejected, status="sent")

    async def _notify_claimed(self, row_id: int, claim: datetime) -> EmailResult:
        """Send a claimed row through Notify, one request per recipient not yet taken or refused."""
        assert self.notify is not None
        # The claimed row as it is now: an earlier attempt may have sent to some recipients.
        row = await self._reload(row_id)
        ids: dict[str, str] = dict(row.provider_ids or {})
        refused: dict[str, tuple[int, str]] = {a: (int(c), "") for a, c in (row.rejected or {}).items()}
        pending = [a for a in row.recipients if a not in ids and a not in refused]
        deadline = time.monotonic() + NOTIFY_ATTEMPT_BUDGET
        in_flight = False
        try:
            if pending and row.resends:
                # An earlier attempt's answer was lost: Notify may hold some of these already.
                held = await self.notify.sent_to(row.key)
                ids.update({a: held[a.lower()] for a in pending if a.lower() in held})
                pending = [a for a in pending if a not in ids]
            for address in pending:
                if time.monotonic() + self.notify.timeout > deadline:
                    # Another request might outlive the activity's timeout: the rest go next attempt.
                    late = "the attempt's time is used up; the other recipients go next attempt"
                    await self._release(row, claim, late, uncertain=False, progress=_progress(ids, refused))
                    raise NotifyUnavailable(late)
                in_flight = True
                outcome = await self.notify.send(
                    to=address, kind=row.kind, subject=row.subject, body=row.body, reference=row.key
                )
                in_flight = False
                if isinstance(outcome, Sent):
                    ids[address] = outcome.notification_id
                elif isinstance(outcome, Refused):
                    refused[address] = (outcome.status, outcome.message)
                    if outcome.status == 403:
                        # Authorisation is refused for every recipient alike.
                        for other in pending:
                            if other not in ids:
                                refused.setdefault(other, (403, outcome.message))
                        break
                else:
                    await self._release(
                        row,
                        claim,
                        outcome.message,
                        uncertain=outcome.uncertain,
                        progress=_progress(ids, refused),
                    )
                    log.warning(
                        "email.delivery_failed",
                        key=row.key,
                        channel="notify",
                        error=outcome.message[:200],
                        outcome_unknown=outcome.uncertain,
                    )
                    raise _retry(outcome)
                # Recorded at once: a retry after a crash must not send to this recipient again.
                await asyncio.shield(self._write(row.id, _progress(ids, refused), claim=claim))
        except (ApplicationError, NotifyUnavailable):
            raise
        except httpx.HTTPError as exc:
            # Notify could not say which messages it holds: nothing was sent, try again later.
            await self._release(row, claim, f"Notify unavailable: {type(exc).__name__}", uncertain=False)
            raise NotifyUnavailable(f"Notify unavailable: {type(exc).__name__}") from exc
        except BaseException:
            # Cancelled mid-request: whether Notify took that recipient's message is unknown.
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self._release(row, claim, None, uncertain=in_flight, progress=_progress(ids, refused))
                )
            raise
        status = "sent" if ids or not refused else "rejected"
        error = _refusal_text(refused) if refused else None
        await asyncio.shield(
            self._record(
                row.id, error, status=status, rejected=refused or None, progress={"provider_ids": ids}
            )
        )
        if refused:
            log.warning("email.rejected", key=row.key, refused=len(refused), channel="notify")
        log.info("email.sent", key=row.key, kind=row.kind, status=status, channel="notify")
        return _rejected_result(row, refused, status=status, receipts=bool(ids))

    def _message(self, row: OutboxMessage) -> EmailMessage:
        message = EmailMessage(policy=MESSAGE_POLICY)
        message["From"] = self.mail_from
        message["To"] = ", ".join(row.recipients)
        message["Subject"] = row.subject
        message["Message-ID"] = row.message_id
        message["Date"] = format_datetime(row.created_at)
        if row.reference:
            message["X-Referral-Reference"] = row.reference
        message.set_content(row.body)
        return message

    async def _reload(self, row_id: int) -> OutboxMessage:
        async with self.sessions() as session:
            row = await session.get(OutboxMessage, row_id)
            assert row is not None
            return row

    async def _claim(self, row_id: int) -> datetime | None:
        """Atomically take the row for delivery; the claim instant, or None if another holds it.

        Taking over an expired claim counts as a possible resend: its holder died somewhere
        between claiming and recording, perhaps after the server had the message.
        """
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
                .values(
                    status="sending",
                    sent_at=now,
                    resends=OutboxMessage.resends + case((OutboxMessage.status == "sending", 1), else_=0),
                )
            )
        return now if result.rowcount == 1 else None  # type: ignore[attr-defined]

    async def _release(
        self,
        row: OutboxMessage,
        claim: datetime,
        error: str | None,
        *,
        uncertain: bool,
        progress: dict[str, object] | None = None,
    ) -> None:
        """Give the claim back after a failed attempt, recording the error (and Notify's progress)."""
        values: dict[str, object] = {
            "status": "pending",
            "sent_at": None,
            "attempts": OutboxMessage.attempts + 1,
            **(progress or {}),
        }
        if error is not None:
            values["last_error"] = error
        if uncertain:
            values["resends"] = OutboxMessage.resends + 1
            log.warning("email.outcome_unknown", key=row.key, reference=row.reference)
        async with self.sessions() as session, session.begin():
            # Only our own claim: a takeover after the lease expired belongs to another attempt.
            await session.execute(
                _update()
                .where(
                    OutboxMessage.id == row.id,
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

    async def _record(
        self,
        row_id: int,
        error: str | None,
        *,
        status: str = "sent",
        rejected: dict[str, tuple[int, str]] | None = None,
        progress: dict[str, object] | None = None,
    ) -> None:
        """Mark the row final (sent, or rejected for good), whatever happened to the claim meanwhile.

        The server has answered, so the answer is kept even while the database is briefly
        unwilling (SQLite busy, a PostgreSQL restart): a lost record would mean a resend.
        """
        values: dict[str, object] = {
            "status": status,
            "attempts": OutboxMessage.attempts + 1,
            "sent_at": datetime.now(UTC),
            **(progress or {}),
        }
        if error is not None:
            values["last_error"] = error[:2000]
        if rejected:
            values["rejected"] = {address: code for address, (code, _) in rejected.items()}
        await self._write(row_id, values)

    async def _write(self, row_id: int, values: dict[str, object], *, claim: datetime | None = None) -> None:
        """UPDATE one row (only while `claim` holds it, if given), retried while the database refuses."""
        condition = [OutboxMessage.id == row_id]
        if claim is not None:
            condition += [OutboxMessage.status == "sending", OutboxMessage.sent_at == claim]
        give_up = datetime.now(UTC) + RECORD_PATIENCE
        pause = 0.1
        while True:
            try:
                async with self.sessions() as session, session.begin():
                    await session.execute(_update().where(*condition).values(**values))
                return
            except OperationalError:
                if datetime.now(UTC) > give_up:
                    raise
                log.warning("email.record_retry", row_id=row_id)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)


class NotifyUnavailable(Exception):
    """Notify did not take a message this time (5xx, connection); Temporal retries the activity."""


def _retry(outcome: Later) -> Exception:
    """The exception that makes Temporal try again; after Notify's Retry-After for a 429."""
    if outcome.retry_after is not None:
        return ApplicationError(
            outcome.message, type="NotifyRateLimited", next_retry_delay=timedelta(seconds=outcome.retry_after)
        )
    return NotifyUnavailable(outcome.message)


def _progress(ids: dict[str, str], refused: dict[str, tuple[int, str]]) -> dict[str, object]:
    """Notify's answers so far, as row values: notification ids, and recipients refused for good."""
    return {
        "provider_ids": dict(ids),
        "rejected": {address: code for address, (code, _) in refused.items()} or None,
    }


def _heartbeat() -> None:
    if activity.in_activity():
        activity.heartbeat()


def _update() -> Update:
    """An UPDATE of outbox rows by condition (no ORM session synchronisation needed)."""
    return update(OutboxMessage).execution_options(synchronize_session=False)


def _result(row: OutboxMessage) -> EmailResult:
    rejected = {address: (int(code), "") for address, code in (row.rejected or {}).items()}
    return _rejected_result(row, rejected, status=row.status, receipts=bool(row.provider_ids))


def _rejected_result(
    row: OutboxMessage, rejected: dict[str, tuple[int, str]], *, status: str, receipts: bool = False
) -> EmailResult:
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
        receipts=receipts,
    )


def _refusal_text(replies: dict[str, tuple[int, str]]) -> str:
    return "refused by the mail server: " + "; ".join(
        f"{address} ({code} {message})".rstrip() for address, (code, message) in replies.items()
    )


async def _by_key(session: AsyncSession, key: str) -> OutboxMessage | None:
    return (await session.execute(select(OutboxMessage).where(OutboxMessage.key == key))).scalar_one_or_none()
