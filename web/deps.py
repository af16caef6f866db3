"""FastAPI dependencies: the request's session, the caller, the command sender, access checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from commands import ReferralCommands
from models import repository
from models.enums import Role
from models.identity import normalise
from models.payloads import Actor
from models.tables import Referral, User
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


def same_force(a: str | None, b: str) -> bool:
    """Force names compare without regard to case or spacing."""
    return a is not None and normalise(a) == normalise(b)


async def referral_for(
    session: AsyncSession, user: User, referral_id: str
) -> Referral | Literal["not_found", "other_force"]:
    """The referral if this user may see it, else why not; JSON and page routes share this rule."""
    if not repository.is_referral_id(referral_id):
        # Not even the shape of an id (PostgreSQL refuses some strings, e.g. with NUL, outright).
        return "not_found"
    row = await repository.get_referral(session, referral_id)
    if row is None:
        return "not_found"
    if user.role == Role.POLICE.value and not same_force(user.force, row.force):
        return "other_force"
    return row


async def visible_referral(session: AsyncSession, user: User, referral_id: str) -> Referral:
    """The referral if this user may see it: 404 unknown, 403 another force's for police."""
    found = await referral_for(session, user, referral_id)
    if found == "not_found":
        raise ApiError(404, "not_found", "no such referral")
    if found == "other_force":
        raise ApiError(403, "forbidden", "this referral belongs to another force")
    return found


def actor_of(user: User) -> Actor:
    """The user as recorded in history."""
    return Actor(user_id=user.id, name=user.name, role=Role(user.role))
