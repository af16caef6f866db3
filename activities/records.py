"""The `project_referral` activity: idempotent upserts of the workflow's state into SQL."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio import activity

from activities.cancel import abandon_on_cancel
from models import tables
from models.payloads import ProjectInput, ReferralState


def _insert(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


#: Columns of the `referral` row that follow the workflow's state (`referral_row`'s keys).
ROW_COLUMNS = (
    "status",
    "risk",
    "awaiting_team",
    "due_at",
    "escalation_level",
    "closed_at",
    "outcome",
    "record_id",
    "referrer_undeliverable",
    "version",
    "handoffs",
    "handed_to",
    "updated_at",
)


@dataclass(frozen=True)
class _Statements:
    purged: Select[tuple[datetime | None]]
    upsert: Any
    append: Any


@functools.cache
def _statements(dialect: str) -> _Statements:
    """The projection's three statements for `dialect`, built once.

    Built with bound parameters and given their values at execution, rather than built around the
    values at every call: SQLAlchemy then finds each one compiled in its cache without rebuilding
    the statement, its literals and its cache key (which cost more CPU than the queries, in a
    worker that projects every referral's every change).
    """
    insert = _insert(dialect)
    table = tables.Referral.__table__
    upsert = insert(table)
    # A retried or reordered projection never moves a row backwards.
    upsert = upsert.on_conflict_do_update(
        index_elements=[table.c.id],
        set_={name: upsert.excluded[name] for name in ROW_COLUMNS},
        where=(table.c.version < upsert.excluded.version) & table.c.purged_at.is_(None),
    )
    events = tables.ReferralEvent.__table__
    append = insert(events).on_conflict_do_nothing(index_elements=[events.c.referral_id, events.c.seq])
    purged = select(table.c.purged_at).where(table.c.id == bindparam("referral_id"))
    return _Statements(purged=purged, upsert=upsert, append=append)


def handed_to(state: ReferralState) -> str:
    """The teams the referral has been handed to, space-delimited with a space either side."""
    teams = sorted({h.team.value for h in state.handoffs})
    return f" {' '.join(teams)} " if teams else ""


def referral_row(state: ReferralState) -> dict[str, Any]:
    """Columns of the `referral` row that follow the workflow's state."""
    current = state.current
    return {
        "status": state.status.value,
        "risk": state.risk.value,
        "awaiting_team": current.team.value if current else None,
        "due_at": current.due_at if current else None,
        "escalation_level": current.escalation_level if current else 0,
        "closed_at": state.closed_at,
        "outcome": state.outcome.value if state.outcome else None,
        "record_id": state.record_id,
        "referrer_undeliverable": state.referrer_undeliverable,
        "version": state.version,
        "handoffs": [h.model_dump(mode="json") for h in state.handoffs],
        "handed_to": handed_to(state),
        "updated_at": datetime.now(UTC),
    }


def referral_values(input: ProjectInput) -> dict[str, Any]:
    """Every column of the `referral` row a projection writes (the insert's values)."""
    state = input.state
    return {
        "id": state.referral_id,
        "reference": state.reference,
        "force": state.force,
        "police_reference": state.police_reference,
        "fingerprint": state.fingerprint,
        "received_at": state.received_at,
        "submitted_by": input.submitted_by.model_dump(mode="json"),
        "details": input.details.model_dump(mode="json"),
        **referral_row(state),
    }


def event_rows(state: ReferralState) -> list[dict[str, Any]]:
    """The `referral_event` rows of the state's events."""
    return [
        {
            "referral_id": state.referral_id,
            "seq": e.seq,
            "type": e.type.value,
            "at": e.at,
            "actor": e.actor.model_dump(mode="json") if e.actor else None,
            "handoff_seq": e.handoff_seq,
            "team": e.team.value if e.team else None,
            "data": e.data,
        }
        for e in state.events
    ]


class RecordActivities:
    """Writes the read model; the worker builds one with its session factory."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        # Projections run in Core on the sessions' engine: no session or identity map is needed.
        self.engine: AsyncEngine = sessions.kw["bind"]

    @activity.defn(name="project_referral")
    async def project_referral(self, input: ProjectInput) -> None:
        """Upsert the referral row (newer versions only) and append its new events."""
        await abandon_on_cancel(self._project(input))

    async def _project(self, input: ProjectInput) -> None:
        state = input.state
        async with self.engine.begin() as connection:
            statements = _statements(connection.dialect.name)
            purged = await connection.scalar(statements.purged, {"referral_id": state.referral_id})
            if purged is not None:
                # Retention removed its personal details: nothing (notes, addresses) comes back.
                activity.logger.warning("projection of a purged referral skipped")
                return
            await connection.execute(statements.upsert, referral_values(input))
            if state.events:
                await connection.execute(statements.append, event_rows(state))
