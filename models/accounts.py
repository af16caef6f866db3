"""Accounts: users and their API tokens (list, issue, expire, revoke); callers own the transaction.

A token is shown once, when it is issued, and stored only as its SHA-256 hash
(`repository.hash_token`). `repository.user_for_token` refuses revoked and expired tokens;
these functions only set the instants it compares.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from models import repository
from models.enums import Role
from models.tables import ApiToken, User

TokenStatus = Literal["active", "expired", "revoked"]

#: The longest lifetime a token may be given, so `now + days` never overflows a datetime.
MAX_EXPIRES_IN_DAYS = 3650

_ID = re.compile(r"[0-9a-f]{32}")


class AccountError(Exception):
    """A change to accounts that cannot be made; the message is one line for the caller."""


class EmailTaken(AccountError):
    """Another user has this email address (compared without regard to case)."""


class TokenAlreadyExpired(AccountError):
    """An expired token cannot be brought back by moving its expiry later: issue a new one."""


def is_id(value: str) -> bool:
    """True when `value` has the shape of a user or token id (uuid4 hex), so a lookup is worth making."""
    return _ID.fullmatch(value) is not None


def new_token() -> str:
    """A fresh random API token, in the same form as `repository.create_user` makes."""
    return repository.TOKEN_PREFIX + secrets.token_urlsafe(32)


def expiry_after(now: datetime, days: int | None) -> datetime | None:
    """The instant `days` days after `now` (None: never expires)."""
    if days is None:
        return None
    if not 1 <= days <= MAX_EXPIRES_IN_DAYS:
        raise AccountError(f"a token lives 1 to {MAX_EXPIRES_IN_DAYS} days, not {days}")
    return now + timedelta(days=days)


def token_status(token: ApiToken, *, now: datetime) -> TokenStatus:
    """Whether `token` is usable now; revocation wins over expiry."""
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at is not None and token.expires_at <= now:
        return "expired"
    return "active"


def _active(now: datetime) -> ColumnElement[bool]:
    # The same rule as repository.user_for_token, as one SQL condition.
    return (ApiToken.revoked_at.is_(None)) & or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now)


@dataclass(frozen=True)
class UserSummary:
    """A user with how many of its tokens are usable now."""

    user: User
    active_tokens: int


async def list_users(session: AsyncSession, *, now: datetime) -> list[UserSummary]:
    """Every user, oldest first, with its count of active tokens."""
    active = (
        select(func.count(ApiToken.id))
        .where(ApiToken.user_id == User.id, _active(now))
        .correlate(User)
        .scalar_subquery()
    )
    rows = await session.execute(select(User, active).order_by(User.created_at, User.id))
    return [UserSummary(user=user, active_tokens=int(count or 0)) for user, count in rows]


async def active_token_count(session: AsyncSession, user_id: str, *, now: datetime) -> int:
    """How many of one user's tokens are usable now."""
    count = await session.scalar(
        select(func.count(ApiToken.id)).where(ApiToken.user_id == user_id, _active(now))
    )
    return int(count or 0)


async def get_user(session: AsyncSession, user_id: str) -> User | None:
    """A user by id (None for anything that is not an id)."""
    return await session.get(User, user_id) if is_id(user_id) else None


async def user_by_email(session: AsyncSession, email: str) -> User | None:
    """A user by email: an exact match, else the only one that matches ignoring case."""
    return await repository.user_for_sign_in(session, email)


async def email_taken(session: AsyncSession, email: str) -> bool:
    """True when a user has this email, compared without regard to case.

    Sign-in matches email without regard to case, so two addresses differing only in case
    would make both users ambiguous there.
    """
    found = await session.scalar(
        select(func.count(User.id)).where(func.lower(User.email) == email.strip().lower())
    )
    return bool(found)


async def create_account(
    session: AsyncSession,
    *,
    role: Role,
    name: str,
    email: str,
    now: datetime,
    force: str | None = None,
    team: str | None = None,
    expires_in_days: int | None = None,
    password_hash: str | None = None,
) -> tuple[User, ApiToken, str]:
    """A new user with its first token (returned once, in clear, as the third item).

    Raises EmailTaken when the address is in use, AccountError for a bad lifetime.
    """
    expires_at = expiry_after(now, expires_in_days)
    if await email_taken(session, email):
        raise EmailTaken(f"a user with email {email} exists already")
    user, token = await repository.create_user(
        session, role=role, name=name, email=email, force=force, team=team, password_hash=password_hash
    )
    row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == repository.hash_token(token)))
    assert row is not None  # create_user has just flushed it
    row.expires_at = expires_at
    await session.flush()
    return user, row, token


async def issue_token(
    session: AsyncSession, user: User, *, now: datetime, expires_in_days: int | None = None
) -> tuple[ApiToken, str]:
    """A new token for `user` (returned once, in clear, as the second item)."""
    expires_at = expiry_after(now, expires_in_days)
    token = new_token()
    row = ApiToken(
        id=uuid.uuid4().hex,
        user_id=user.id,
        token_hash=repository.hash_token(token),
        created_at=now,
        expires_at=expires_at,
    )
    session.add(row)
    await session.flush()
    return row, token


async def tokens_of(session: AsyncSession, user_id: str) -> list[ApiToken]:
    """A user's tokens, oldest first."""
    rows = await session.scalars(
        select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.created_at, ApiToken.id)
    )
    return list(rows)


async def get_token(session: AsyncSession, token_id: str) -> ApiToken | None:
    """A token row by id (None for anything that is not an id)."""
    return await session.get(ApiToken, token_id) if is_id(token_id) else None


async def revoke_token(session: AsyncSession, token: ApiToken, *, now: datetime) -> ApiToken:
    """Revoke for good; revoking again keeps the first instant (the audit trail)."""
    if token.revoked_at is None:
        token.revoked_at = now
        await session.flush()
    return token


async def expire_token(session: AsyncSession, token: ApiToken, *, at: datetime, now: datetime) -> ApiToken:
    """Make `token` expire at `at` (now or later, or earlier than planned).

    Raises TokenAlreadyExpired when the token has expired and `at` would bring it back:
    a leaked token that lapsed must not be revived by a typo.
    """
    if at.tzinfo is None:
        raise AccountError("give the instant with its offset, e.g. 2026-12-01T09:00:00+00:00")
    if token.expires_at is not None and token.expires_at <= now and at > token.expires_at:
        raise TokenAlreadyExpired(
            f"token {token.id} expired at {token.expires_at.isoformat()}; issue a new one instead"
        )
    token.expires_at = at
    await session.flush()
    return token
