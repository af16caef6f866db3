"""Benchmark: the CPU of intake's two read-model lookups, four ways (in-process).

    .venv/bin/python -m bench.lookups [--pairs 600] [--rounds 4] [--database postgresql|sqlite]

Every `POST /api/v1/referrals` looks the caller's token up and looks for a closed referral under
the same key before it starts the workflow. Until 2026-12-04 each lookup had a session of its
own on the API's engine: a pool checkout with a pre-ping, BEGIN, the query and ROLLBACK. Until
2026-12-05 both shared one ORM session, in autocommit on PostgreSQL (SQLite keeps its
transactions). Until 2026-12-06 both ran in SQLAlchemy Core on one connection
(`web.deps.ReadsApart`), with no session or identity map, and the duplicate lookup asks for
closed rows only (the only ones it answers from). Now the same Core statements, built once, run
on psycopg's own cursor on PostgreSQL (`models.driver`; on SQLite they still go through
SQLAlchemy, so there the last two ways differ only in building each statement once). This times
the four ways, `--pairs` pairs a round, interleaved over
`--rounds` rounds, as process CPU (the API's limit under load), against a fresh migrated read
model where the token is found and the referral is not (a new referral, as nearly always). Prints
the median and the minimum of the rounds for each way, and the share of the latest against
the one before. The "two sessions" way leaves out the timeout wrapper the old code put around
each lookup (`ReadsApart.read` keeps one per lookup).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from activities.cancel import abandon_on_cancel
from api import database_options
from bench import harness
from bench.seed import seed
from models import identity, repository
from models.db import create_engine, session_factory
from models.enums import Role, Status
from models.migrate import upgrade
from models.tables import ApiToken, Referral, User
from web.deps import DATABASE_WAIT, ReadsApart, apart_engine

T = TypeVar("T")


async def seeded(url: str) -> tuple[str, str]:
    """A user's token in the read model at `url`, and the id of a referral not yet in it (what
    intake's duplicate lookup nearly always looks for: a new referral)."""
    engine = create_engine(url)
    try:
        await seed(engine, 10, events_per_referral=0)
        async with session_factory(engine)() as session, session.begin():
            _, token = await repository.create_user(
                session, role=Role.POLICE, name="bench", email="bench@example.test", force="Bench Police"
            )
            assert await session.scalar(select(func.count()).select_from(Referral)) == 10
    finally:
        await engine.dispose()
    return token, identity.referral_id("Bench Police", "NEW-REFERRAL")


def ways(engine: AsyncEngine, token: str, referral_id: str) -> dict[str, Callable[[], Awaitable[None]]]:
    """The lookup pair as it was (a session each; one ORM session) and as it is (web.deps.ReadsApart)."""
    sessions = session_factory(engine)
    autocommit = apart_engine(engine)
    apart = session_factory(autocommit)

    async def two_sessions() -> None:
        now = datetime.now(UTC)
        async with sessions() as own:
            assert await _orm_token_holder(own, token, now=now) is not None
        async with sessions() as own:
            assert await own.get(Referral, referral_id) is None

    async def one_session() -> None:
        now = datetime.now(UTC)
        async with apart() as own:
            assert await _guarded(_orm_token_holder(own, token, now=now)) is not None
            assert await _guarded(own.get(Referral, referral_id)) is None

    async def core() -> None:
        now = datetime.now(UTC)
        reads = ReadsApart(autocommit)
        try:
            assert await reads.read(lambda own: _core_token_holder(own, token, now=now)) is not None
            assert await reads.read(lambda own: _core_closed_referrals(own, [referral_id])) == {}
        finally:
            await reads.release()

    async def driver() -> None:
        now = datetime.now(UTC)
        reads = ReadsApart(autocommit)
        try:
            assert await reads.read(lambda own: repository.token_holder(own, token, now=now)) is not None
            assert await reads.read(lambda own: repository.closed_referrals(own, [referral_id])) == {}
        finally:
            await reads.release()

    return {
        "two ORM sessions (until 2026-12-04)": two_sessions,
        "one ORM session (until 2026-12-05)": one_session,
        "one connection, Core (until 2026-12-06)": core,
        "one connection, at the driver on PostgreSQL (now)": driver,
    }


async def _guarded(lookup: Coroutine[Any, Any, T]) -> T:
    """The time limit each lookup had until 2026-12-05 (two tasks and a shield)."""
    return await asyncio.wait_for(abandon_on_cancel(lookup), DATABASE_WAIT)


async def _orm_token_holder(session: AsyncSession, token: str, *, now: datetime) -> tuple[User, Any] | None:
    """The token check as it was until 2026-12-05: the user loaded through the ORM session."""
    row = (
        await session.execute(
            select(User, ApiToken.expires_at)
            .join(ApiToken, ApiToken.user_id == User.id)
            .where(
                ApiToken.token_hash == repository.hash_token(token),
                ApiToken.revoked_at.is_(None),
                or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now),
            )
        )
    ).one_or_none()
    return None if row is None else (row[0], row[1])


async def _core_token_holder(
    connection: AsyncConnection, token: str, *, now: datetime
) -> tuple[User, Any] | None:
    """The token check as it was until 2026-12-06: a Core statement built at each call."""
    users, tokens = User.__table__, ApiToken.__table__
    row = (
        await connection.execute(
            select(users, tokens.c.expires_at)
            .join(tokens, tokens.c.user_id == users.c.id)
            .where(
                tokens.c.token_hash == repository.hash_token(token),
                tokens.c.revoked_at.is_(None),
                or_(tokens.c.expires_at.is_(None), tokens.c.expires_at > now),
            )
        )
    ).one_or_none()
    if row is None:
        return None
    fields = row._mapping
    return User(**{column.key: fields[column] for column in users.columns}), fields[tokens.c.expires_at]


async def _core_closed_referrals(connection: AsyncConnection, ids: list[str]) -> dict[str, Referral]:
    """The duplicate lookup as it was until 2026-12-06."""
    referrals = Referral.__table__
    rows = await connection.execute(
        select(referrals).where(referrals.c.id.in_(ids), referrals.c.status == Status.CLOSED.value)
    )
    found = [Referral(**{column.key: row._mapping[column] for column in referrals.columns}) for row in rows]
    return {referral.id: referral for referral in found}


async def run(args: argparse.Namespace) -> list[str]:
    with tempfile.TemporaryDirectory() as folder, harness.fresh_database(args.database, Path(folder)) as url:
        upgrade(url)
        token, referral_id = await seeded(url)
        engine = create_engine(url, **database_options(url))
        try:
            pairs = ways(engine, token, referral_id)
            cpu: dict[str, list[float]] = {name: [] for name in pairs}
            for _ in range(args.rounds):
                for name, pair in pairs.items():
                    for _ in range(50):  # warm: pool, statement caches
                        await pair()
                    started = time.process_time()
                    for _ in range(args.pairs):
                        await pair()
                    cpu[name].append(1000 * (time.process_time() - started) / args.pairs)
        finally:
            await engine.dispose()
    lines = [
        f"{name}: {statistics.median(ms):.2f} ms of CPU a pair (median of {args.rounds} rounds of "
        f"{args.pairs}; min {min(ms):.2f} ms)"
        for name, ms in cpu.items()
    ]
    _, _, before, now = (statistics.median(ms) for ms in cpu.values())
    share = 100 * now / before
    lines.append(
        f"RESULT lookups ({args.database}): the lookups as they are now take {share:.0f}% of the CPU "
        "of Core statements built at each call"
    )
    return lines


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=600, help="lookup pairs a round")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    harness.report("bench.lookups", argv, run(p.parse_args(argv)))


if __name__ == "__main__":
    main(sys.argv[1:])
