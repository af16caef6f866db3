"""Benchmark: the CPU of one projection into the read model, as it was and as it is (in-process).

    .venv/bin/python -m bench.projection [--referrals 300] [--rounds 4] [--database postgresql|sqlite]

The worker projects every change of every referral (`project_referral`): in an escalation storm,
one projection an escalation beside the email and the rebuild. Until 2026-12-06 each projection
opened an ORM session and built its three statements around the values (a multi-row VALUES for
the events), so SQLAlchemy built each statement and its cache key again at every call. Now the
statements are built once with bound parameters and run on a connection of the engine
(`activities.records`). This times both ways over `--rounds` interleaved rounds, as process CPU:
for each of `--referrals` new referrals, the first projection (the row and its first two events)
and the next (the row updated to a newer version, three more events), as the worker writes them.
Prints the median and minimum of the rounds for each way, and the share of the new against the old.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from activities.records import ROW_COLUMNS, RecordActivities, _insert, event_rows, referral_values
from api import database_options
from bench import harness
from commands import intake_input
from models import tables
from models.db import create_engine, session_factory
from models.enums import EventType, Role, Status, Team
from models.migrate import upgrade
from models.payloads import (
    Actor,
    HandoffState,
    PlannedSend,
    ProjectInput,
    ReferralDetails,
    ReferralEvent,
    ReferralState,
)
from models.schemas import ReferralCreate

POLICE = Actor(user_id="bench-police", name="PC Bench", role=Role.POLICE)


def projections(n: int) -> tuple[ProjectInput, ProjectInput]:
    """A new referral's first projection and its next, as the workflow sends them."""
    details: ReferralDetails = ReferralCreate.model_validate(
        harness.referral_body(f"BENCH-{n}-{uuid.uuid4().hex[:8]}")
    ).to_details()
    received = datetime.now(UTC)
    state = ReferralState.received(intake_input(details, actor=POLICE, received_at=received))
    due = received + timedelta(hours=4)
    handoff = HandoffState(
        seq=1,
        team=Team.FRONT_DOOR,
        team_name="Front door (MASH)",
        opened_at=received,
        due_at=due,
        plan=[PlannedSend(step=0, repeat=0, at=due, kind="escalation", recipients=["mash@council.example"])],
    )
    events = [
        ReferralEvent(seq=1, type=EventType.RECEIVED, at=received, actor=POLICE),
        ReferralEvent(seq=2, type=EventType.HANDOFF_OPENED, at=received, handoff_seq=1, team=Team.FRONT_DOOR),
    ]
    first = state.model_copy(
        update={"handoffs": [handoff], "status": Status.AWAITING_DECISION, "events": events, "version": 2}
    )
    more = [
        ReferralEvent(
            seq=seq,
            type=EventType.EMAIL_SENT,
            at=due,
            handoff_seq=1,
            team=Team.FRONT_DOOR,
            data={"kind": "escalation", "step": 0, "repeat": 0, "to": ["mash@council.example"]},
        )
        for seq in (3, 4, 5)
    ]
    later = handoff.model_copy(update={"escalation_level": 1, "done": [(0, 0)]})
    next_ = first.model_copy(update={"handoffs": [later], "events": more, "version": 5})
    return (
        ProjectInput(state=first, submitted_by=POLICE, details=details),
        ProjectInput(state=next_, submitted_by=POLICE, details=details),
    )


def orm_per_call(sessions: async_sessionmaker[Any]) -> Callable[[ProjectInput], Awaitable[None]]:
    """The projection as it was until 2026-12-06: an ORM session, statements built at each call."""

    async def project(input: ProjectInput) -> None:
        state = input.state
        async with sessions() as session, session.begin():
            purged = await session.scalar(
                select(tables.Referral.purged_at).where(tables.Referral.id == state.referral_id)
            )
            assert purged is None
            insert = _insert(session.get_bind().dialect.name)
            values = referral_values(input)
            table = tables.Referral.__table__
            stmt = insert(table).values(**values)
            stmt = stmt.on_conflict_do_update(
                index_elements=[table.c.id],
                set_={name: values[name] for name in ROW_COLUMNS},
                where=(table.c.version < stmt.excluded.version) & table.c.purged_at.is_(None),
            )
            await session.execute(stmt)
            events = tables.ReferralEvent.__table__
            await session.execute(
                insert(events)
                .values(event_rows(state))
                .on_conflict_do_nothing(index_elements=[events.c.referral_id, events.c.seq])
            )

    return project


async def run(args: argparse.Namespace) -> list[str]:
    with tempfile.TemporaryDirectory() as folder, harness.fresh_database(args.database, Path(folder)) as url:
        upgrade(url)
        engine = create_engine(url, **database_options(url))
        try:
            sessions = session_factory(engine)
            ways: dict[str, Callable[[ProjectInput], Awaitable[None]]] = {
                "ORM session, statements built at each call (until 2026-12-06)": orm_per_call(sessions),
                "Core on a connection, statements built once (now)": RecordActivities(sessions)._project,
            }
            cpu: dict[str, list[float]] = {name: [] for name in ways}
            for _ in range(args.rounds):
                for name, project in ways.items():
                    inputs = [projections(n) for n in range(args.referrals + 20)]
                    for first, next_ in inputs[:20]:  # warm: pool, statement caches
                        await project(first)
                        await project(next_)
                    started = time.process_time()
                    for first, next_ in inputs[20:]:
                        await project(first)
                        await project(next_)
                    cpu[name].append(1000 * (time.process_time() - started) / (2 * args.referrals))
            async with engine.connect() as connection:
                rows = (await connection.execute(select(tables.Referral.version))).scalars().all()
            expected = 2 * args.rounds * (args.referrals + 20)
            if len(rows) != expected or set(rows) != {5}:
                raise harness.BenchError(f"expected {expected} rows at version 5, found {len(rows)}")
        finally:
            await engine.dispose()
    lines = [
        f"{name}: {statistics.median(ms):.2f} ms of CPU a projection (median of {args.rounds} rounds "
        f"of {2 * args.referrals}; min {min(ms):.2f} ms)"
        for name, ms in cpu.items()
    ]
    before, now = (statistics.median(ms) for ms in cpu.values())
    lines.append(
        f"RESULT projection ({args.database}): a projection as it is now takes {100 * now / before:.0f}% "
        "of the CPU it took with an ORM session and statements built at each call"
    )
    return lines


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--referrals", type=int, default=300, help="referrals a round (two projections each)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    harness.report("bench.projection", argv, run(p.parse_args(argv)))


if __name__ == "__main__":
    main(sys.argv[1:])
