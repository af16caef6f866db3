"""Benchmark: the CPU of intake's two read-model lookups, on two sessions against one (in-process).

    .venv/bin/python -m bench.lookups [--pairs 600] [--rounds 4] [--database postgresql|sqlite]

Every `POST /api/v1/referrals` looks the caller's token up and looks for a closed referral under
the same key before it starts the workflow. Until 2026-12-04 each lookup had a session of its
own on the API's engine: a pool checkout with a pre-ping, BEGIN, the query and ROLLBACK. Now
both share one session (`web.deps.ReadsApart`): one checkout, and on PostgreSQL autocommit, so
no BEGIN or ROLLBACK (SQLite keeps its transactions: `web.deps.apart_sessions`).
This times both ways, `--pairs` pairs a round, the two interleaved over `--rounds` rounds, as
process CPU (the API's limit under load), against a fresh migrated read model whose token and
referral are both found (so each lookup loads its row). Prints the median and the minimum of
the rounds for each way, and their ratio. The "before" way leaves out the timeout wrapper the
old code put around each lookup (`ReadsApart.read` keeps one per lookup), so the share printed
understates the saving slightly.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from api import database_options
from bench import harness
from bench.seed import seed
from models import repository
from models.db import create_engine, session_factory
from models.enums import Role
from models.migrate import upgrade
from models.tables import Referral
from web.deps import ReadsApart, apart_sessions


async def seeded(url: str) -> tuple[str, str]:
    """A user's token and a referral id that both exist in the read model at `url`."""
    engine = create_engine(url)
    try:
        await seed(engine, 10, events_per_referral=0)
        async with session_factory(engine)() as session, session.begin():
            _, token = await repository.create_user(
                session, role=Role.POLICE, name="bench", email="bench@example.test", force="Bench Police"
            )
            referral_id = await session.scalar(select(Referral.id).limit(1))
    finally:
        await engine.dispose()
    assert referral_id is not None
    return token, referral_id


def ways(engine: AsyncEngine, token: str, referral_id: str) -> dict[str, Callable[[], Awaitable[None]]]:
    """The lookup pair, as it was (a session each) and as it is (one session, web.deps.apart_sessions)."""
    sessions = session_factory(engine)
    apart = apart_sessions(engine)

    async def two_sessions() -> None:
        now = datetime.now(UTC)
        async with sessions() as own:
            assert await repository.token_holder(own, token, now=now) is not None
        async with sessions() as own:
            assert await repository.get_referral(own, referral_id) is not None

    async def one_session() -> None:
        now = datetime.now(UTC)
        reads = ReadsApart(apart)
        try:
            assert await reads.read(lambda own: repository.token_holder(own, token, now=now)) is not None
            assert await reads.read(lambda own: repository.get_referral(own, referral_id)) is not None
        finally:
            await reads.release()

    return {"two sessions (before)": two_sessions, "one session (now)": one_session}


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
    before, now = (statistics.median(ms) for ms in cpu.values())
    share = 100 * now / before
    lines.append(f"RESULT lookups ({args.database}): one session takes {share:.0f}% of the CPU of two")
    return lines


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=600, help="lookup pairs a round")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    harness.report("bench.lookups", argv, run(p.parse_args(argv)))


if __name__ == "__main__":
    main(sys.argv[1:])
