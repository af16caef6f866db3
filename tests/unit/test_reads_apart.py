"""web.deps.ReadsApart: a request's lookups on one connection of their own, never reused once failed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from models.db import create_engine
from web import deps
from web.deps import ReadsApart, apart_engine


@pytest_asyncio.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'read.db'}")
    try:
        yield engine
    finally:
        await engine.dispose()


class _Noting:
    """An engine that notes each connection it hands out."""

    def __init__(self, engine: AsyncEngine, opened: list[AsyncConnection]) -> None:
        self.engine, self.opened = engine, opened

    def connect(self) -> AsyncConnection:
        connection = self.engine.connect()
        self.opened.append(connection)
        return connection


def reads_of(engine: AsyncEngine, opened: list[AsyncConnection]) -> ReadsApart:
    """ReadsApart on `engine` as the API makes it, noting each connection it opens."""
    return ReadsApart(_Noting(apart_engine(engine), opened))  # type: ignore[arg-type]


async def one(connection: AsyncConnection) -> int:
    return int((await connection.execute(text("SELECT 1"))).scalar_one())


async def test_lookups_share_one_connection_until_released(engine: AsyncEngine) -> None:
    opened: list[AsyncConnection] = []
    reads = reads_of(engine, opened)
    assert await reads.read(one) == 1
    assert await reads.read(one) == 1
    assert len(opened) == 1 and engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    await reads.release()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await reads.read(one) == 1
    assert len(opened) == 2
    await reads.release()
    await reads.release()  # twice is harmless
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_failed_lookup_closes_its_connection_and_the_next_opens_another(engine: AsyncEngine) -> None:
    opened: list[AsyncConnection] = []
    reads = reads_of(engine, opened)

    async def broken(connection: AsyncConnection) -> None:
        await connection.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(OperationalError):
        await reads.read(broken)
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await reads.read(one) == 1
    assert len(opened) == 2
    await reads.release()


async def test_a_lookup_given_up_on_unwinds_apart(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deps, "DATABASE_WAIT", 0.2)
    opened: list[AsyncConnection] = []
    reads = reads_of(engine, opened)
    unwound = asyncio.Event()

    async def stuck(connection: AsyncConnection) -> None:
        await connection.execute(text("SELECT 1"))
        try:
            await asyncio.sleep(60)  # a database that stopped answering
        finally:
            unwound.set()

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await reads.read(stuck)
    assert loop.time() - started < 5
    # The next lookup does not touch the abandoned connection.
    assert await reads.read(one) == 1
    assert len(opened) == 2
    await reads.release()
    await asyncio.wait_for(unwound.wait(), 5)
    for _ in range(50):
        if engine.pool.checkedout() == 0:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.05)
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_autocommit_on_postgresql_only(engine: AsyncEngine) -> None:
    postgres = create_engine("postgresql://nobody@127.0.0.1:1/none")  # never connected
    try:
        options = apart_engine(postgres).get_execution_options()
        assert options.get("isolation_level") == "AUTOCOMMIT"
    finally:
        await postgres.dispose()
    assert "isolation_level" not in apart_engine(engine).get_execution_options()
