"""Accounts and tokens in the read model (SQLite and PostgreSQL): only active tokens authenticate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models import accounts, repository
from models.db import create_engine, session_factory
from models.enums import Role
from models.tables import ApiToken

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


@pytest_asyncio.fixture
async def session(database_url: str) -> AsyncIterator[AsyncSession]:
    """A session on a fresh, migrated read model."""
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as s:
            yield s
    finally:
        await engine.dispose()


async def _account(session: AsyncSession, email: str = "a@example.test", **kwargs: object) -> tuple[str, str]:
    _, row, token = await accounts.create_account(
        session,
        role=Role.MANAGER,
        name="A Manager",
        email=email,
        now=NOW,
        **kwargs,  # type: ignore[arg-type]
    )
    await session.commit()
    return row.id, token


class TestUserForToken:
    """repository.user_for_token refuses revoked and expired tokens, and unknown ones."""

    async def test_active_token_finds_its_user(self, session: AsyncSession) -> None:
        _, token = await _account(session)
        user = await repository.user_for_token(session, token, now=NOW)
        assert user is not None and user.email == "a@example.test"
        assert await repository.user_for_token(session, token + "x", now=NOW) is None

    async def test_revoked_token_is_refused(self, session: AsyncSession) -> None:
        token_id, token = await _account(session)
        row = await accounts.get_token(session, token_id)
        assert row is not None
        await accounts.revoke_token(session, row, now=NOW)
        await session.commit()
        assert await repository.user_for_token(session, token, now=NOW) is None
        assert accounts.token_status(row, now=NOW) == "revoked"

    async def test_token_is_refused_from_the_instant_it_expires(self, session: AsyncSession) -> None:
        token_id, token = await _account(session, expires_in_days=2)
        row = await accounts.get_token(session, token_id)
        assert row is not None and row.expires_at == NOW + timedelta(days=2)
        expiry = row.expires_at
        assert await repository.user_for_token(session, token, now=expiry - timedelta(seconds=1)) is not None
        assert await repository.user_for_token(session, token, now=expiry) is None
        assert accounts.token_status(row, now=expiry) == "expired"

    async def test_expire_now_and_in_the_future(self, session: AsyncSession) -> None:
        token_id, token = await _account(session)
        row = await accounts.get_token(session, token_id)
        assert row is not None
        await accounts.expire_token(session, row, at=NOW + timedelta(hours=1), now=NOW)
        await session.commit()
        assert await repository.user_for_token(session, token, now=NOW) is not None
        await accounts.expire_token(session, row, at=NOW, now=NOW)
        await session.commit()
        assert await repository.user_for_token(session, token, now=NOW) is None

    async def test_an_expired_token_cannot_be_revived(self, session: AsyncSession) -> None:
        token_id, token = await _account(session)
        row = await accounts.get_token(session, token_id)
        assert row is not None
        await accounts.expire_token(session, row, at=NOW - timedelta(hours=1), now=NOW)
        with pytest.raises(accounts.TokenAlreadyExpired):
            await accounts.expire_token(session, row, at=NOW + timedelta(days=1), now=NOW)
        # Bringing the expiry earlier is still allowed.
        await accounts.expire_token(session, row, at=NOW - timedelta(hours=2), now=NOW)
        await session.commit()
        assert await repository.user_for_token(session, token, now=NOW) is None

    async def test_revoking_twice_keeps_the_first_instant(self, session: AsyncSession) -> None:
        token_id, _ = await _account(session)
        row = await accounts.get_token(session, token_id)
        assert row is not None
        await accounts.revoke_token(session, row, now=NOW)
        await accounts.revoke_token(session, row, now=NOW + timedelta(days=1))
        assert row.revoked_at == NOW


class TestAccounts:
    """Creating accounts, issuing tokens, counting active ones."""

    async def test_tokens_are_stored_only_hashed(self, session: AsyncSession) -> None:
        _, token = await _account(session)
        user = await accounts.user_by_email(session, "a@example.test")
        assert user is not None
        _, second_token = await accounts.issue_token(session, user, now=NOW)
        await session.commit()
        hashes = list(await session.scalars(select(ApiToken.token_hash)))
        assert repository.hash_token(token) in hashes and repository.hash_token(second_token) in hashes
        assert token not in hashes and second_token not in hashes
        assert second_token.startswith(repository.TOKEN_PREFIX) and second_token != token
        assert await repository.user_for_token(session, second_token, now=NOW) is not None

    async def test_email_in_use_ignoring_case_is_refused(self, session: AsyncSession) -> None:
        await _account(session, "Someone@Example.test")
        with pytest.raises(accounts.EmailTaken):
            await _account(session, "someone@example.TEST")

    async def test_active_token_counts(self, session: AsyncSession) -> None:
        first_id, _ = await _account(session, "one@example.test")
        await _account(session, "two@example.test")
        user = await accounts.user_by_email(session, "one@example.test")
        assert user is not None
        await accounts.issue_token(session, user, now=NOW)
        await accounts.issue_token(session, user, now=NOW, expires_in_days=1)
        row = await accounts.get_token(session, first_id)
        assert row is not None
        await accounts.revoke_token(session, row, now=NOW)
        await session.commit()
        counts = {s.user.email: s.active_tokens for s in await accounts.list_users(session, now=NOW)}
        assert counts == {"one@example.test": 2, "two@example.test": 1}
        later = {
            s.user.email: s.active_tokens
            for s in await accounts.list_users(session, now=NOW + timedelta(days=1))
        }
        assert later == {"one@example.test": 1, "two@example.test": 1}
        assert await accounts.active_token_count(session, user.id, now=NOW) == 2

    @pytest.mark.parametrize("days", [0, -1, accounts.MAX_EXPIRES_IN_DAYS + 1])
    async def test_lifetime_out_of_range_is_refused(self, session: AsyncSession, days: int) -> None:
        with pytest.raises(accounts.AccountError):
            await _account(session, expires_in_days=days)

    @pytest.mark.parametrize("value", ["", "nope", "0" * 31, "G" * 32, "\x00" * 32, "a" * 33])
    async def test_lookups_of_what_is_not_an_id_find_nothing(self, session: AsyncSession, value: str) -> None:
        # PostgreSQL refuses NUL in a string outright: such ids must never reach the query.
        assert await accounts.get_token(session, value) is None
        assert await accounts.get_user(session, value) is None
