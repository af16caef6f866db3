"""Retention: the personal details of referrals closed longer than the retention period are purged.

Purged: the submitted details (children, summary, referrer), free-text notes on hand-offs and
events, the email addresses in ladder plans and in email events, and the recipients, body and
delivery errors of the referral's emails. Kept: the referral row (reference, force and police
reference, which stay the permanent duplicate guard, fingerprint, status, outcome, record id,
instants), every event with its type, instant, team, outcome, reason, record id, step and due
instant, and every email's key, kind, subject (reference and step only), status and instants.

A purge runs in batches, one transaction each; a referral is claimed by setting `purged_at`, so a
second or concurrent run never purges it again. Open referrals are never touched, however old.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, null, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from models.db import create_engine, session_factory
from models.enums import Status
from models.retention_payloads import BATCH_SIZE, PurgeInput, PurgeResult
from models.tables import OutboxMessage, Referral, ReferralEvent

#: Keys of an event's `data` that may hold personal data: free text typed by a worker, and the
#: email addresses a message went to (the referrer's among them).
PERSONAL_EVENT_KEYS = frozenset({"note", "to"})


class RetentionError(Exception):
    """The purge could not run; the message is one line for the operator."""


def cutoff_for(now: datetime, retention_days: int) -> datetime:
    """Referrals closed before this instant are due for purging."""
    return now - timedelta(days=retention_days)


def scrub_handoff(handoff: dict[str, Any]) -> dict[str, Any]:
    """A projected hand-off without its note or the addresses its ladder would have written to."""
    scrubbed = dict(handoff)
    # Kept as keys (empty) rather than dropped, so the row still reads as a HandoffState.
    if "note" in scrubbed:
        scrubbed["note"] = ""
    scrubbed["plan"] = [{**send, "recipients": []} for send in handoff.get("plan") or []]
    return scrubbed


def scrub_event_data(data: dict[str, Any]) -> dict[str, Any]:
    """An event's data without its personal keys (outcome, reason, record id, step, due stay)."""
    return {k: v for k, v in data.items() if k not in PERSONAL_EVENT_KEYS}


def _due(cutoff: datetime) -> Any:
    """Closed, not yet purged, closed before the cut-off: the WHERE of every purge query."""
    return (
        Referral.status == Status.CLOSED.value,
        Referral.closed_at.is_not(None),
        Referral.closed_at < cutoff,
        Referral.purged_at.is_(None),
    )


async def count_due(session: AsyncSession, cutoff: datetime) -> int:
    """How many referrals a purge with this cut-off would purge now."""
    total = await session.scalar(select(func.count()).select_from(Referral).where(*_due(cutoff)))
    return int(total or 0)


async def purge_batch(session: AsyncSession, *, cutoff: datetime, limit: int) -> PurgeResult:
    """Purge up to `limit` due referrals in the caller's transaction; the counts of what changed."""
    oldest_first = select(Referral.id).where(*_due(cutoff)).order_by(Referral.closed_at, Referral.id)
    # The claim comes first and is a write: SQLite takes its write lock here (no stale read to
    # upgrade), and PostgreSQL re-checks `purged_at IS NULL` on a row a concurrent purge just
    # claimed, so two purges at once never both count one referral.
    claimed = (
        await session.execute(
            update(Referral)
            .where(Referral.id.in_(oldest_first.limit(limit).scalar_subquery()), Referral.purged_at.is_(None))
            .values(details=null(), purged_at=datetime.now(UTC))
            .returning(Referral.id, Referral.handoffs)
            .execution_options(synchronize_session=False)
        )
    ).all()
    if not claimed:
        return PurgeResult()
    ids = [row.id for row in claimed]
    handoffs = [{"id": row.id, "handoffs": [scrub_handoff(h) for h in row.handoffs or []]} for row in claimed]
    await session.execute(update(Referral), handoffs)
    events = await _scrub_events(session, ids)
    outbox = await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.referral_id.in_(ids))
        .values(recipients=[], body="", last_error=None)
        .execution_options(synchronize_session=False)
    )
    return PurgeResult(referrals=len(ids), events=events, outbox_messages=_rowcount(outbox))


async def _scrub_events(session: AsyncSession, ids: Iterable[str]) -> int:
    rows = await session.execute(
        select(ReferralEvent.referral_id, ReferralEvent.seq, ReferralEvent.data).where(
            ReferralEvent.referral_id.in_(list(ids))
        )
    )
    changed = [
        {"referral_id": r.referral_id, "seq": r.seq, "data": scrub_event_data(r.data)}
        for r in rows
        if r.data and PERSONAL_EVENT_KEYS & r.data.keys()
    ]
    if changed:
        await session.execute(update(ReferralEvent), changed)
    return len(changed)


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


class RetentionActivities:
    """The purge as a Temporal activity; the worker builds one with its session factory."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    @activity.defn(name="purge_closed_referrals")
    async def purge_closed_referrals(self, input: PurgeInput) -> PurgeResult:
        """Purge one batch of referrals closed before `now - retention_days`, in one transaction."""
        cutoff = cutoff_for(input.now, input.retention_days)
        async with self.sessions() as session, session.begin():
            result = await purge_batch(session, cutoff=cutoff, limit=input.batch_size)
        if result.referrals:
            activity.logger.info(
                "retention: purged %d referrals closed before %s", result.referrals, cutoff.isoformat()
            )
        return result


@dataclass(frozen=True)
class PurgeReport:
    """What `referrals purge` did (or, with --dry-run, would do)."""

    referrals: int
    cutoff: datetime
    retention_days: int
    dry_run: bool

    def line(self) -> str:
        """One line for the operator, starting with what happened and the count."""
        verb = "would purge" if self.dry_run else "purged"
        return (
            f"{verb} {self.referrals} referral(s) closed before {self.cutoff.isoformat(timespec='seconds')}"
            f" (retention {self.retention_days} days)"
        )


async def purge_read_model(
    database_url: str,
    *,
    retention_days: int,
    dry_run: bool = False,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
) -> PurgeReport:
    """Run the whole purge against the read model directly (no Temporal), batch by batch."""
    cutoff = cutoff_for(now or datetime.now(UTC), retention_days)
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    total = 0
    try:
        if dry_run:
            async with sessions() as session:
                total = await count_due(session, cutoff)
        else:
            while True:
                async with sessions() as session, session.begin():
                    batch = await purge_batch(session, cutoff=cutoff, limit=batch_size)
                total += batch.referrals
                if batch.referrals < batch_size:
                    break
    except SQLAlchemyError as exc:
        # Unmigrated or unreachable databases raise many types; the operator needs one line.
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        raise RetentionError(f"purge failed: {type(exc).__name__}: {first}") from None
    finally:
        await engine.dispose()
    return PurgeReport(referrals=total, cutoff=cutoff, retention_days=retention_days, dry_run=dry_run)
