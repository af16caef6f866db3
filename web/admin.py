"""Admin JSON routes under /api/v1: users and their API tokens (the `admin` role only).

A token is shown once, in the response that issues it; afterwards only its id, dates and
status are visible. Revoking is for good; an expired token cannot be brought back. The error
statuses and their shape are declared in the OpenAPI document by web/errors.py, for every route.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import structlog
from fastapi import APIRouter, Depends
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StrictInt,
    ValidationInfo,
    field_validator,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from models import accounts
from models.enums import Role, Team
from models.payloads import Text
from models.schemas import iso_text
from models.tables import ApiToken, User
from web.deps import CurrentUser, SessionDep, require
from web.errors import API_PREFIX, ApiError

log = structlog.get_logger(__name__)

router = APIRouter(prefix=API_PREFIX, tags=["admin"])


# ---- bodies ----------------------------------------------------------------------------------


Days = Annotated[StrictInt, Field(ge=1, le=accounts.MAX_EXPIRES_IN_DAYS)]


class AdminBody(BaseModel):
    """Request bodies refuse unknown fields."""

    model_config = ConfigDict(extra="forbid")


class UserCreate(AdminBody):
    """Body of POST /users: `force` is required for a police user."""

    role: Role
    name: Text
    email: EmailStr
    # validate_default: a police user without a force must fail on `force` itself, so the
    # 422 names that field.
    force: Annotated[Text | None, Field(validate_default=True)] = None
    team: Team | None = None
    expires_in_days: Days | None = None

    @field_validator("force")
    @classmethod
    def _police_need_a_force(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("role") == Role.POLICE:
            raise ValueError("required for a police user")
        return value


class TokenCreate(AdminBody):
    """Body of POST /users/{user_id}/tokens (optional): the token's lifetime, default never."""

    expires_in_days: Days | None = None


class TokenExpire(AdminBody):
    """Body of POST /tokens/{token_id}/expire (optional): when, default now."""

    at: Annotated[AwareDatetime, BeforeValidator(iso_text)] | None = None

    @field_validator("at")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        try:
            return value.astimezone(UTC)
        except OverflowError:  # e.g. 9999-12-31T23:00-05:00 is past the last representable instant
            raise ValueError("out of range") from None


class TokenRead(BaseModel):
    """An API token's id, dates and status; never the token or its hash."""

    id: str
    user_id: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    status: Literal["active", "expired", "revoked"]

    @classmethod
    def build(cls, row: ApiToken, *, now: datetime) -> TokenRead:
        """From a token row."""
        return cls(
            id=row.id,
            user_id=row.user_id,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            status=accounts.token_status(row, now=now),
        )


class TokenIssued(TokenRead):
    """A new token, with the token itself: shown this once, stored only hashed."""

    token: str


class TokenList(BaseModel):
    """A user's tokens, oldest first."""

    items: list[TokenRead]


class UserRead(BaseModel):
    """A user with how many of its tokens are usable now."""

    id: str
    name: str
    email: str
    role: Role
    force: str | None
    team: str | None
    created_at: datetime
    active_tokens: int

    @classmethod
    def build(cls, user: User, *, active_tokens: int) -> UserRead:
        """From a user row."""
        return cls(
            id=user.id,
            name=user.name,
            email=user.email,
            role=Role(user.role),
            force=user.force,
            team=user.team,
            created_at=user.created_at,
            active_tokens=active_tokens,
        )


class UserList(BaseModel):
    """Every user, oldest first."""

    items: list[UserRead]


class UserCreated(BaseModel):
    """A new user and its first token (shown this once)."""

    user: UserRead
    token: TokenIssued


# ---- routes ----------------------------------------------------------------------------------


async def admin_user(user: CurrentUser) -> User:
    """The caller if an admin, else 403 (a dependency, so it runs before the body is validated)."""
    require(user, Role.ADMIN)
    return user


Admin = Annotated[User, Depends(admin_user)]


@router.get("/users", response_model=UserList)
async def list_users(admin: Admin, session: SessionDep) -> UserList:
    """Every user with its count of active tokens."""
    now = datetime.now(UTC)
    summaries = await accounts.list_users(session, now=now)
    return UserList(items=[UserRead.build(s.user, active_tokens=s.active_tokens) for s in summaries])


@router.post("/users", status_code=201, response_model=UserCreated)
async def create_user(body: UserCreate, admin: Admin, session: SessionDep) -> UserCreated:
    """A new user and its first API token (shown once); 409 when the email is in use."""
    now = datetime.now(UTC)
    try:
        user, row, token = await accounts.create_account(
            session,
            role=body.role,
            name=body.name,
            email=body.email,
            now=now,
            force=body.force,
            team=body.team.value if body.team else None,
            expires_in_days=body.expires_in_days,
        )
    except accounts.EmailTaken as exc:
        raise ApiError(409, "conflict", str(exc), fields={"email": "in use"}) from None
    except IntegrityError:
        # Another request created the same email between our check and our insert.
        raise ApiError(
            409, "conflict", "a user with this email exists already", fields={"email": "in use"}
        ) from None
    log.info("admin.user_created", by=admin.id, user_id=user.id, role=user.role, token_id=row.id)
    issued = TokenIssued(**TokenRead.build(row, now=now).model_dump(), token=token)
    return UserCreated(user=UserRead.build(user, active_tokens=1), token=issued)


async def _user(session: AsyncSession, user_id: str) -> User:
    user = await accounts.get_user(session, user_id)
    if user is None:
        raise ApiError(404, "not_found", "no such user")
    return user


async def _token(session: AsyncSession, token_id: str) -> ApiToken:
    row = await accounts.get_token(session, token_id)
    if row is None:
        raise ApiError(404, "not_found", "no such token")
    return row


@router.get("/users/{user_id}/tokens", response_model=TokenList)
async def list_tokens(user_id: str, admin: Admin, session: SessionDep) -> TokenList:
    """A user's tokens: id, dates, status; never the tokens."""
    user = await _user(session, user_id)
    now = datetime.now(UTC)
    return TokenList(items=[TokenRead.build(t, now=now) for t in await accounts.tokens_of(session, user.id)])


@router.post("/users/{user_id}/tokens", status_code=201, response_model=TokenIssued)
async def issue_token(
    user_id: str, admin: Admin, session: SessionDep, body: TokenCreate | None = None
) -> TokenIssued:
    """A new token for the user (shown once)."""
    user = await _user(session, user_id)
    now = datetime.now(UTC)
    days = body.expires_in_days if body is not None else None
    row, token = await accounts.issue_token(session, user, now=now, expires_in_days=days)
    log.info("admin.token_issued", by=admin.id, user_id=user.id, token_id=row.id)
    return TokenIssued(**TokenRead.build(row, now=now).model_dump(), token=token)


@router.post("/tokens/{token_id}/revoke", response_model=TokenRead)
async def revoke_token(token_id: str, admin: Admin, session: SessionDep) -> TokenRead:
    """Revoke a token for good (again: no change)."""
    now = datetime.now(UTC)
    row = await accounts.revoke_token(session, await _token(session, token_id), now=now)
    log.info("admin.token_revoked", by=admin.id, user_id=row.user_id, token_id=row.id)
    return TokenRead.build(row, now=now)


@router.post("/tokens/{token_id}/expire", response_model=TokenRead)
async def expire_token(
    token_id: str, admin: Admin, session: SessionDep, body: TokenExpire | None = None
) -> TokenRead:
    """Make a token expire now or at `at`; 409 when that would bring an expired token back."""
    now = datetime.now(UTC)
    at = body.at if body is not None and body.at is not None else now
    try:
        row = await accounts.expire_token(session, await _token(session, token_id), at=at, now=now)
    except accounts.TokenAlreadyExpired as exc:
        raise ApiError(409, "conflict", str(exc), fields={"at": "after the instant it expired"}) from None
    log.info("admin.token_expired", by=admin.id, user_id=row.user_id, token_id=row.id, at=at.isoformat())
    return TokenRead.build(row, now=now)
