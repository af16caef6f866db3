"""FastAPI dependencies: the request's session, the caller, the command sender, access checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

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


async def current_user(request: Request, session: SessionDep) -> User:
    """The user behind the bearer token, or 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    challenge = {"WWW-Authenticate": "Bearer"}
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>", headers=challenge)
    user = await repository.user_for_token(session, token.strip(), now=datetime.now(UTC))
    if user is None:
        raise ApiError(401, "unauthorized", "the token is not valid", headers=challenge)
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def commands_of(request: Request) -> ReferralCommands:
    """The Temporal command sender."""
    commands: ReferralCommands = request.app.state.commands
    return commands


Commands = Annotated[ReferralCommands, Depends(commands_of)]


def require(user: User, *roles: Role) -> None:
    """403 unless the user has one of `roles`."""
    if user.role not in {r.value for r in roles}:
        raise ApiError(403, "forbidden", f"the {user.role} role may not do this")


async def visible_referral(
    session: AsyncSession, user: User, referral_id: str, *, command: bool = False
) -> Referral:
    """The referral if this user may see it: 404 unknown, 403 when role, force or team may not.

    A `command` from a team the read model does not show the referral handed to goes on to the
    workflow, which knows best: the projection may lag a hand-off opened a moment ago, and a
    referral not awaiting the team is refused there with the precise reason (409).
    """
    found = await referral_for(session, user, referral_id)
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
