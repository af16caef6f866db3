"""FastAPI dependencies: the request's session, the caller, the command sender, access checks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from activities.cancel import abandon_on_cancel
from commands import ReferralCommands
from models import repository
from models.enums import Role
from models.payloads import Actor
from models.tables import Referral, User
from web.access import DENIED_MESSAGES, Denied, referral_for
from web.errors import ApiError


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request; the request boundary commits."""
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        yield session
        await session.commit()


SessionDep = Annotated[AsyncSession, Depends(get_session)]
T = TypeVar("T")


#: Errors that mean the read model did not answer (as opposed to a bug in a query).
DATABASE_DOWN = (OperationalError, InterfaceError, PoolTimeout, OSError, TimeoutError)
RETRY_AFTER = {"Retry-After": "5"}
# A read-model query on the intake path gives up after this: a database that stops answering
# (no reset, no refusal) would otherwise hold the request until TCP gives up, minutes later.
DATABASE_WAIT = 5.0

# How long a token verified against the read model is still honoured while the read model is
# unreachable, so police can keep referring during an outage. The cache is consulted only when
# the database does not answer: while it answers, a revoked token is refused at once. During an
# outage a token revoked in the last TOKEN_GRACE may still submit (never past its own expiry).
TOKEN_GRACE = timedelta(minutes=5)
TOKEN_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class _Verified:
    user: User
    until: float  # on the monotonic clock


class TokenCache:
    """Tokens (by hash) recently verified against the read model, for use only while it is down."""

    def __init__(
        self,
        *,
        grace: timedelta = TOKEN_GRACE,
        size: int = TOKEN_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.grace, self.size, self.clock = grace, size, clock
        self._entries: dict[str, _Verified] = {}

    def remember(self, token: str, user: User, *, expires_at: datetime | None, now: datetime) -> None:
        """Note that the read model has just accepted `token` for `user`."""
        ttl = self.grace.total_seconds()
        if expires_at is not None:
            ttl = min(ttl, (expires_at - now).total_seconds())
        key = repository.hash_token(token)
        self._entries.pop(key, None)
        if ttl <= 0:
            return
        while len(self._entries) >= self.size:
            del self._entries[next(iter(self._entries))]  # the oldest verification
        # A detached copy: the request's session (and its connection) must not be kept alive.
        snapshot = User(
            id=user.id,
            name=user.name,
            email=user.email,
            role=user.role,
            force=user.force,
            team=user.team,
            created_at=user.created_at,
        )
        self._entries[key] = _Verified(snapshot, self.clock() + ttl)

    def forget(self, token: str) -> None:
        """The read model refused `token`: never honour it from here again."""
        self._entries.pop(repository.hash_token(token), None)

    def recall(self, token: str) -> User | None:
        """The user `token` was verified for within the grace period, else None."""
        key = repository.hash_token(token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self.clock() >= entry.until:
            del self._entries[key]
            return None
        return entry.user


async def abandon(session: AsyncSession) -> None:
    """Drop the session's connection without talking to a database that does not answer."""
    with contextlib.suppress(*DATABASE_DOWN):
        # Invalidation closes the connection without a ROLLBACK round trip that could hang too.
        await session.invalidate()


class ReadsApart:
    """A request's read-model lookups that give up after DATABASE_WAIT without waiting for them:
    the token check and intake's duplicate lookups, on one connection of their own.

    Apart from the request's session: a database that stops answering (no reset, no refusal)
    holds psycopg's own cancellation of a query for ten seconds or more, and `asyncio.wait_for`
    would wait for that too. A lookup given up on unwinds in the background and closes its
    connection there; the next lookup opens another, and the request's session is untouched.

    One connection for all of a request's lookups, in autocommit on PostgreSQL (`apart_engine`),
    queried in SQLAlchemy Core rather than through an ORM session: intake's token check and
    duplicate lookup cost one pool checkout and one round trip each, with no BEGIN, no ROLLBACK
    and no identity map (`python -m bench.lookups`). `release()` gives the connection back as
    soon as the lookups are over, before the request waits on anything else; the request's end
    releases it in any case.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: AsyncConnection | None = None

    async def read(self, query: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """`query` on the lookups' connection; DATABASE_DOWN errors (and TimeoutError) propagate."""
        connection = self._connection
        if connection is None:
            # Checked out of the pool at its first use, inside the time limit below.
            connection = self._connection = self._engine.connect()

        async def run() -> T:
            try:
                if connection.sync_connection is None:
                    await connection.start()
                return await query(connection)
            except BaseException:
                # Failed or given up on: the connection is not used again. When given up on this
                # runs in the background, after the request has moved on.
                await _close(connection)
                raise

        try:
            return await asyncio.wait_for(abandon_on_cancel(run()), DATABASE_WAIT)
        except BaseException:
            if self._connection is connection:
                self._connection = None
            raise

    async def release(self) -> None:
        """Give the connection back to the pool; a later lookup checks out another."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await _close(connection)


async def _close(connection: AsyncConnection) -> None:
    if connection.sync_connection is not None:  # never started: nothing was checked out
        await connection.close()


def apart_engine(engine: AsyncEngine) -> AsyncEngine:
    """The engine for ReadsApart: autocommit on PostgreSQL (a lookup is one round trip, with no
    BEGIN or ROLLBACK); as it is on SQLite, where aiosqlite would pay a hop to its thread to
    switch autocommit on and off at every checkout (`python -m bench.lookups --database sqlite`).
    """
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


async def reads_apart(request: Request) -> AsyncIterator[ReadsApart]:
    """The request's lookups apart (one per request: FastAPI caches the dependency)."""
    reads = ReadsApart(request.app.state.apart_engine)
    try:
        yield reads
    finally:
        await reads.release()


ReadsApartDep = Annotated[ReadsApart, Depends(reads_apart)]


def token_cache_of(request: Request) -> TokenCache:
    """The app's cache of verified tokens (one per app, created on first use)."""
    cache: TokenCache | None = getattr(request.app.state, "token_cache", None)
    if cache is None:
        cache = request.app.state.token_cache = TokenCache()
    return cache


async def current_user(request: Request, session: SessionDep, reads: ReadsApartDep) -> User:
    """The user behind the bearer token, or 401; while the read model is down, a recent one, or 503.

    The lookups' connection goes back to the pool here: the route reads on its own session.
    """
    user = await authenticate(request, reads, session)
    await reads.release()
    return user


async def intake_user(request: Request, reads: ReadsApartDep) -> User:
    """As `current_user`, keeping the lookups' connection for the route's duplicate lookup.

    Intake reads nothing else from the read model, so it opens no session of its own.
    """
    return await authenticate(request, reads)


async def authenticate(request: Request, reads: ReadsApart, session: AsyncSession | None = None) -> User:
    """The user behind the bearer token (see `current_user`)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    challenge = {"WWW-Authenticate": "Bearer"}
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>", headers=challenge)
    token = token.strip()
    cache = token_cache_of(request)
    now = datetime.now(UTC)
    try:
        held = await reads.read(lambda own: repository.token_holder(own, token, now=now))
    except DATABASE_DOWN:
        if session is not None:
            await abandon(session)
        user = cache.recall(token)
        if user is None:
            # Not known to be valid or invalid: retrying later is the honest answer.
            raise ApiError(
                503, "unavailable", "the database is unavailable; retry", headers=RETRY_AFTER
            ) from None
        return user
    if held is None:
        cache.forget(token)
        raise ApiError(401, "unauthorized", "the token is not valid", headers=challenge)
    user, expires_at = held
    cache.remember(token, user, expires_at=expires_at, now=now)
    return user


CurrentUser = Annotated[User, Depends(current_user)]
IntakeUser = Annotated[User, Depends(intake_user)]


def commands_of(request: Request) -> ReferralCommands:
    """The Temporal command sender."""
    commands: ReferralCommands = request.app.state.commands
    return commands


async def _commands(request: Request) -> ReferralCommands:
    # A coroutine: FastAPI runs a plain function dependency in a worker thread, a thread hop
    # on every command (about 6% of the API's CPU under intake, `python -m bench.profile_intake`).
    return commands_of(request)


Commands = Annotated[ReferralCommands, Depends(_commands)]


def require(user: User, *roles: Role) -> None:
    """403 unless the user has one of `roles`."""
    if user.role not in {r.value for r in roles}:
        raise ApiError(403, "forbidden", f"the {user.role} role may not do this")


async def visible_referral(session: AsyncSession, user: User, referral_id: str) -> Referral:
    """The referral if this user may see it: 404 unknown, 403 when role, force or team may not."""
    found = await commandable_referral(session, user, referral_id, command=False)
    assert found is not None
    return found


async def commandable_referral(
    session: AsyncSession, user: User, referral_id: str, *, command: bool = True
) -> Referral | None:
    """The referral a command is about; None when the read model has not listed it yet.

    A command goes on to the workflow, which knows best, when the read model does not (yet)
    show the referral, or shows it not handed to the caller's team: the projection may lag an
    intake answered 202 or a hand-off opened a moment ago, and the workflow refuses what is not
    awaiting the caller with the precise reason (409), or is not there at all (404).
    """
    found = await referral_for(session, user, referral_id)
    if command and found == Denied.NOT_FOUND and repository.is_referral_id(referral_id):
        return None
    if found == Denied.NOT_FOUND:
        raise ApiError(404, "not_found", "no such referral")
    if command and found == Denied.NOT_HANDED:
        row = await repository.get_referral(session, referral_id)
        assert row is not None  # referral_for has just found it
        return row
    if isinstance(found, Denied):
        raise ApiError(403, "forbidden", DENIED_MESSAGES[found])
    return found


def actor_of(user: User) -> Actor:
    """The user as recorded in history."""
    return Actor(user_id=user.id, name=user.name, role=Role(user.role))
