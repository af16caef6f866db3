"""Intake's lookups (at the driver on PostgreSQL, in SQLAlchemy Core on SQLite): the same rows the
ORM would load, and the errors SQLAlchemy would raise."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import event, insert, select, text
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine

from models import accounts, identity, repository
from models.db import create_engine, session_factory
from models.driver import DriverQuery
from models.enums import Role, Team
from models.payloads import HandoffState
from models.tables import Referral, User

NOW = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)


@pytest_asyncio.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


def _row(n: int, status: str) -> dict[str, Any]:
    force, reference = "Kent Police", f"LOOKUP-{n}"
    rid = identity.referral_id(force, reference)
    closed = status == "closed"
    return {
        "id": rid,
        "reference": identity.reference_for(rid),
        "force": force,
        "police_reference": reference,
        "fingerprint": f"{n:064x}",
        "status": status,
        "risk": "amber",
        "awaiting_team": None if closed else "front_door",
        "due_at": None if closed else NOW + timedelta(hours=n),
        "escalation_level": n,
        "received_at": NOW - timedelta(days=n),
        "closed_at": NOW if closed else None,
        "outcome": "early_help" if closed else None,
        "record_id": f"EH-{n}" if closed else None,
        "version": 3 + n,
        "handoffs": [
            HandoffState(
                seq=1,
                team=Team.FRONT_DOOR,
                team_name="Front door",
                opened_at=NOW - timedelta(days=n),
                due_at=NOW + timedelta(hours=n),
                plan=[],
                closed_at=NOW if closed else None,
            ).model_dump(mode="json")
        ],
        "submitted_by": {"user_id": "u", "name": "PC Lookup", "role": "police"},
        "details": {"child": f"child {n}"},
        "updated_at": NOW,
        "handed_to": " front_door early_help ",
        "purged_at": None,
        "referrer_undeliverable": n == 2,
    }


def _columns(row: Referral) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in Referral.__table__.columns}


async def test_closed_referrals_are_the_closed_rows_whole(engine: AsyncEngine) -> None:
    rows = [_row(1, "awaiting_decision"), _row(2, "closed"), _row(3, "closed")]
    async with engine.begin() as connection:
        await connection.execute(insert(Referral), rows)
    unknown = identity.referral_id("Kent Police", "NEVER-SEEN")
    async with engine.connect() as connection:
        found = await repository.closed_referrals(connection, [r["id"] for r in rows] + [unknown])
        assert await repository.closed_referrals(connection, []) == {}
        # Intake asks for one id at a time (a statement of its own).
        assert list(await repository.closed_referrals(connection, [rows[1]["id"]])) == [rows[1]["id"]]
        assert await repository.closed_referrals(connection, [rows[0]["id"]]) == {}
        assert await repository.closed_referrals(connection, [unknown]) == {}
    assert sorted(found) == sorted(r["id"] for r in rows[1:])
    async with session_factory(engine)() as session:
        for rid, referral in found.items():
            stored = await session.get(Referral, rid)
            assert stored is not None
            assert _columns(referral) == _columns(stored)
            assert repository.state_of(referral) == repository.state_of(stored)


async def test_the_token_holder_is_the_whole_user(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        user, row, token = await accounts.create_account(
            session, role=Role.POLICE, name="PC Holder", email="h@example.test", force="Kent Police",
            now=NOW, expires_in_days=3, password_hash="a-hash",
        )  # fmt: skip
        await session.commit()
        stored = (await session.scalars(select(User).where(User.id == user.id))).one()
    async with engine.connect() as connection:
        held = await repository.token_holder(connection, token, now=NOW)
        assert held is not None
        holder, expires_at = held
        assert expires_at == row.expires_at == NOW + timedelta(days=3)
        assert {c.key: getattr(holder, c.key) for c in User.__table__.columns} == {
            c.key: getattr(stored, c.key) for c in User.__table__.columns
        }
        assert await repository.token_holder(connection, token, now=NOW + timedelta(days=3)) is None


async def _police_token(engine: AsyncEngine, name: str, email: str) -> str:
    """A new police user's token, without expiry."""
    async with session_factory(engine)() as session:
        _, _, token = await accounts.create_account(
            session, role=Role.POLICE, name=name, email=email, force="Kent Police", now=NOW
        )
        await session.commit()
    return token


async def test_on_postgresql_the_lookups_bypass_sqlalchemys_execution(engine: AsyncEngine) -> None:
    """The driver path is taken on PostgreSQL (SQLAlchemy executes nothing), not on SQLite."""
    token = await _police_token(engine, "PC Path", "p@example.test")
    executed: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        executed.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        async with engine.connect() as connection:
            held = await repository.token_holder(connection, token, now=NOW)
            assert held is not None and held[0].name == "PC Path" and held[1] is None
            assert await repository.closed_referrals(connection, ["0" * 32]) == {}
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert len(executed) == (0 if engine.dialect.name == "postgresql" else 2)


async def test_a_failing_statement_raises_sqlalchemys_error(engine: AsyncEngine) -> None:
    missing = DriverQuery(select(text("1")).select_from(text("no_such_table")))
    async with engine.connect() as connection:
        with pytest.raises((ProgrammingError, OperationalError)) as raised:
            await missing.all(connection, {})
        assert "no_such_table" in str(raised.value)
        assert not connection.invalidated


async def test_a_lost_connection_is_invalidated_and_not_reused(engine: AsyncEngine) -> None:
    """Killed under the lookup: SQLAlchemy's OperationalError (so intake counts the database as
    down), the pool discards the connection, and the next lookup gets a working one."""
    if engine.dialect.name != "postgresql":
        pytest.skip("a server-side kill of one connection is PostgreSQL's")
    token = await _police_token(engine, "PC Kill", "k@example.test")
    async with engine.connect() as victim:
        pid = (await victim.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await victim.commit()
        async with engine.connect() as killer:
            await killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await killer.commit()
        with pytest.raises(OperationalError) as raised:
            await repository.token_holder(victim, token, now=NOW)
        assert raised.value.connection_invalidated
        assert victim.invalidated
    async with engine.connect() as fresh:
        assert (await fresh.execute(text("SELECT pg_backend_pid()"))).scalar_one() != pid
        held = await repository.token_holder(fresh, token, now=NOW)
        assert held is not None and held[0].name == "PC Kill"


async def test_an_engine_that_hides_parameters_hides_them_from_the_error(database_url: str) -> None:
    hidden = create_engine(database_url, hide_parameters=True)
    missing = DriverQuery(select(text("1")).select_from(text("no_such_table")).where(text("1 = :secret")))
    try:
        async with hidden.connect() as connection:
            with pytest.raises((ProgrammingError, OperationalError)) as raised:
                await missing.all(connection, {"secret": 424242})
    finally:
        await hidden.dispose()
    assert "no_such_table" in str(raised.value)
    assert "424242" not in str(raised.value)
