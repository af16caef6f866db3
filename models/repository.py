"""Queries of the read model, in one place; callers own the session and its transaction."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ARRAY, Select, String, and_, any_, bindparam, case, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from models.driver import DriverQuery
from models.enums import Risk, Role, Status, Team
from models.payloads import HandoffState, ReferralEvent, ReferralState
from models.tables import AccessAudit, ApiToken, OutboxMessage, Referral, SignInFailure, User
from models.tables import ReferralEvent as EventRow

TOKEN_PREFIX = "rt_"
_REFERRAL_ID = re.compile(r"[0-9a-f]{32}")


def is_referral_id(value: str) -> bool:
    """True when `value` has the shape of a referral id (see models.identity.referral_id)."""
    return _REFERRAL_ID.fullmatch(value) is not None


def state_of(row: Referral) -> ReferralState:
    """The projected workflow state held in a referral row."""
    return ReferralState(
        referral_id=row.id,
        reference=row.reference,
        fingerprint=row.fingerprint,
        force=row.force,
        police_reference=row.police_reference,
        risk=row.risk,
        status=row.status,
        received_at=row.received_at,
        closed_at=row.closed_at,
        outcome=row.outcome,
        record_id=row.record_id,
        handoffs=[HandoffState.model_validate(h) for h in row.handoffs],
        version=row.version,
    )


async def get_referral(session: AsyncSession, referral_id: str) -> Referral | None:
    """One referral row by id."""
    return await session.get(Referral, referral_id)


async def events_of(session: AsyncSession, referral_id: str) -> list[ReferralEvent]:
    """A referral's chronology in order."""
    rows = await session.scalars(
        select(EventRow).where(EventRow.referral_id == referral_id).order_by(EventRow.seq)
    )
    return [
        ReferralEvent(
            seq=r.seq,
            type=r.type,
            at=r.at,
            actor=r.actor,
            handoff_seq=r.handoff_seq,
            team=r.team,
            data=r.data,
        )
        for r in rows
    ]


@dataclass(frozen=True)
class ListFilter:
    """Filters of GET /referrals."""

    status: str = "open"
    team: Team | None = None
    overdue: bool | None = None
    force: str | None = None
    #: Only referrals handed to this team at some point (a receiving team's scope).
    handed_to: Team | None = None


def encode_cursor(row: Referral) -> str:
    """An opaque cursor after `row` in (due_at, id) order."""
    raw = json.dumps([row.due_at.isoformat() if row.due_at else None, row.id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime | None, str]:
    """The position in a cursor; ValueError when it was not made by encode_cursor."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        due, rid = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(rid, str) or not is_referral_id(rid):
            raise TypeError
        instant = datetime.fromisoformat(due) if due is not None else None
        if instant is not None and instant.utcoffset() is None:
            raise TypeError  # every cursor this API makes carries an offset
        return instant, rid
    except (ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError("not a cursor returned by this API") from exc


async def list_referrals(
    session: AsyncSession, filters: ListFilter, *, now: datetime, limit: int, cursor: str | None
) -> tuple[list[Referral], str | None]:
    """A page of referrals ordered by due instant (closed ones, without one, last)."""
    query = select(Referral)
    if filters.status == "open":
        query = query.where(Referral.status != Status.CLOSED.value)
    else:
        query = query.where(Referral.status == filters.status)
    if filters.team is not None:
        query = query.where(Referral.awaiting_team == filters.team.value)
    if filters.force is not None:
        query = query.where(Referral.force == filters.force)
    if filters.handed_to is not None:
        query = query.where(handed_to(filters.handed_to))
    if filters.overdue is True:
        query = query.where(Referral.due_at < now, Referral.status != Status.CLOSED.value)
    elif filters.overdue is False:
        query = query.where(or_(Referral.due_at.is_(None), Referral.due_at >= now))
    if cursor is not None:
        due, rid = decode_cursor(cursor)
        if due is None:
            query = query.where(Referral.due_at.is_(None), Referral.id > rid)
        else:
            query = query.where(
                or_(
                    Referral.due_at > due,
                    and_(Referral.due_at == due, Referral.id > rid),
                    Referral.due_at.is_(None),
                )
            )
    query = query.order_by(Referral.due_at.asc().nulls_last(), Referral.id).limit(limit + 1)
    rows = list(await session.scalars(query))
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def open_counts(session: AsyncSession, *, now: datetime) -> list[tuple[str | None, int, int]]:
    """(awaiting team, open referrals, overdue referrals) for /metrics."""
    overdue = func.sum(case((Referral.due_at < now, 1), else_=0))
    rows = await session.execute(
        select(Referral.awaiting_team, func.count(), overdue)
        .where(Referral.status != Status.CLOSED.value)
        .group_by(Referral.awaiting_team)
    )
    return [(team, int(count), int(late or 0)) for team, count, late in rows]


#: Outbox statuses that mean a message will not arrive without someone acting.
DELIVERY_FAILED = ("failed", "rejected")


async def outbox_counts(session: AsyncSession) -> list[tuple[str, str, int]]:
    """(kind, status, messages) over the whole outbox, for /metrics."""
    rows = await session.execute(
        select(OutboxMessage.kind, OutboxMessage.status, func.count())
        .group_by(OutboxMessage.kind, OutboxMessage.status)
        .order_by(OutboxMessage.kind, OutboxMessage.status)
    )
    return [(kind, status, int(count)) for kind, status, count in rows]


async def outbox(session: AsyncSession, *, limit: int = 200) -> list[OutboxMessage]:
    """The newest messages first (the dev outbox)."""
    rows = await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit))
    return list(rows)


def hash_token(token: str) -> str:
    """Tokens are stored only as SHA-256 hashes: they are random, so no salt is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


async def create_user(
    session: AsyncSession,
    *,
    role: Role,
    name: str,
    email: str,
    force: str | None = None,
    team: str | None = None,
    password_hash: str | None = None,
) -> tuple[User, str]:
    """A user with a new API token; the token is returned once and stored only hashed.

    `password_hash` (from web.auth.hash_password) lets the user sign in to the web pages.
    """
    now = datetime.now(UTC)
    user = User(
        id=uuid.uuid4().hex,
        name=name,
        email=email,
        role=role.value,
        force=force,
        team=team,
        password_hash=password_hash,
        created_at=now,
    )
    session.add(user)
    await session.flush()  # the token row refers to the user
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(id=uuid.uuid4().hex, user_id=user.id, token_hash=hash_token(token), created_at=now))
    await session.flush()
    return user, token


_USERS, _TOKENS, _REFERRALS = User.__table__, ApiToken.__table__, Referral.__table__
_USER_KEYS = [column.key for column in _USERS.columns]
_REFERRAL_KEYS = [column.key for column in _REFERRALS.columns]
# Built once: a statement's cache key is computed once, not at every request.
_TOKEN_HOLDER = DriverQuery(
    select(_USERS, _TOKENS.c.expires_at)
    .join(_TOKENS, _TOKENS.c.user_id == _USERS.c.id)
    .where(
        _TOKENS.c.token_hash == bindparam("token_hash"),
        _TOKENS.c.revoked_at.is_(None),
        or_(_TOKENS.c.expires_at.is_(None), _TOKENS.c.expires_at > bindparam("now")),
    )
)
_CLOSED_REFERRALS = DriverQuery(
    select(_REFERRALS).where(
        _REFERRALS.c.id.in_(bindparam("ids", expanding=True)), _REFERRALS.c.status == Status.CLOSED.value
    ),
    # One statement whatever the number of ids (an expanding IN is rendered again for each).
    postgresql=select(_REFERRALS).where(
        _REFERRALS.c.id == any_(bindparam("ids", type_=ARRAY(String))),
        _REFERRALS.c.status == Status.CLOSED.value,
    ),
)
# Intake's one id: psycopg's dumping of a one-item array costs more than the rest of the query.
_CLOSED_REFERRAL = DriverQuery(
    select(_REFERRALS).where(_REFERRALS.c.id == bindparam("id"), _REFERRALS.c.status == Status.CLOSED.value)
)


async def token_holder(
    connection: AsyncConnection, token: str, *, now: datetime
) -> tuple[User, datetime | None] | None:
    """The user holding a valid (unrevoked, unexpired) token, and when the token expires.

    On a connection, at the driver on PostgreSQL (every API request asks this first,
    `models.driver`): the user comes back as a detached copy, not through a session's identity
    map (`python -m bench.lookups`).
    """
    rows = await _TOKEN_HOLDER.all(connection, {"token_hash": hash_token(token), "now": now})
    if not rows:
        return None
    *fields, expires_at = rows[0]
    return User(**dict(zip(_USER_KEYS, fields, strict=True))), expires_at


async def user_for_token(session: AsyncSession, token: str, *, now: datetime) -> User | None:
    """The user holding a valid (unrevoked, unexpired) token."""
    held = await token_holder(await session.connection(), token, now=now)
    return held[0] if held is not None else None


async def closed_referrals(connection: AsyncConnection, ids: Sequence[str]) -> dict[str, Referral]:
    """The closed referrals among `ids`, by id (intake's duplicate lookup, before Temporal).

    On a connection, at the driver on PostgreSQL, as `token_holder`: rows come back as detached
    copies.
    """
    if not ids:
        return {}
    if len(ids) == 1:
        rows = await _CLOSED_REFERRAL.all(connection, {"id": ids[0]})
    else:
        rows = await _CLOSED_REFERRALS.all(connection, {"ids": list(ids)})
    found = [Referral(**dict(zip(_REFERRAL_KEYS, row, strict=True))) for row in rows]
    return {referral.id: referral for referral in found}


async def user_by_email(session: AsyncSession, email: str) -> User | None:
    """A user by email address."""
    return (await session.execute(select(User).where(User.email == email))).scalar_one_or_none()


async def get_user(session: AsyncSession, user_id: str) -> User | None:
    """A user by id."""
    return await session.get(User, user_id)


async def user_for_sign_in(session: AsyncSession, email: str) -> User | None:
    """The user signing in with `email`: an exact match, else the one match ignoring case."""
    email = email.strip()
    exact = await user_by_email(session, email)
    if exact is not None:
        return exact
    rows = list(await session.scalars(select(User).where(func.lower(User.email) == email.lower()).limit(2)))
    return rows[0] if len(rows) == 1 else None


async def set_password(session: AsyncSession, user_id: str, password_hash: str | None) -> bool:
    """Set (or, with None, remove) a user's web sign-in password hash; False when no such user."""
    user = await session.get(User, user_id)
    if user is None:
        return False
    user.password_hash = password_hash
    await session.flush()
    return True


# ---- the dashboard's queue of open referrals --------------------------------------------------


@dataclass(frozen=True)
class QueueFilter:
    """Filters of the dashboard and its CSV export."""

    team: Team | None = None
    force: str | None = None
    risk: Risk | None = None
    overdue: bool = False
    #: Only referrals handed to this team at some point (a receiving team's scope).
    handed_to: Team | None = None


@dataclass(frozen=True)
class QueueRow:
    """One open referral as the dashboard lists it."""

    id: str
    reference: str
    force: str
    risk: str
    awaiting_team: str | None
    due_at: datetime
    received_at: datetime
    escalation_level: int


@dataclass(frozen=True)
class QueueGroup:
    """Open referrals of one (team, force, RAG): how many, how many overdue, received after each instant."""

    team: str | None
    force: str
    risk: str
    open: int
    overdue: int
    received_after: tuple[int, ...]


def _is_open() -> Any:
    # Open means an open hand-off (a due instant) on a referral not closed; ix_referral_due_at
    # walks exactly these rows in urgency order.
    return and_(Referral.due_at.is_not(None), Referral.status != Status.CLOSED.value)


def _queue(
    filters: QueueFilter, *, now: datetime
) -> Select[str, str, str, str, str | None, datetime | None, datetime, int]:
    query = select(
        Referral.id,
        Referral.reference,
        Referral.force,
        Referral.risk,
        Referral.awaiting_team,
        Referral.due_at,
        Referral.received_at,
        Referral.escalation_level,
    ).where(_is_open())
    if filters.team is not None:
        query = query.where(Referral.awaiting_team == filters.team.value)
    if filters.force is not None:
        query = query.where(Referral.force == filters.force)
    if filters.risk is not None:
        query = query.where(Referral.risk == filters.risk.value)
    if filters.overdue:
        query = query.where(Referral.due_at < now)
    if filters.handed_to is not None:
        query = query.where(handed_to(filters.handed_to))
    # Overdue referrals have the earliest due instants, so this is "overdue first, then due".
    return query.order_by(Referral.due_at, Referral.id)


async def open_queue(
    session: AsyncSession,
    filters: QueueFilter,
    *,
    now: datetime,
    limit: int | None = None,
    offset: int = 0,
) -> list[QueueRow]:
    """Open referrals matching `filters`, most urgent first; a page of them with `limit`."""
    query = _queue(filters, now=now)
    if limit is not None:
        query = query.limit(limit).offset(offset)
    rows = []
    for rid, reference, force, risk, team, due_at, received_at, level in await session.execute(query):
        assert due_at is not None  # _is_open() keeps only referrals with a due instant
        rows.append(QueueRow(rid, reference, force, risk, team, due_at, received_at, level))
    return rows


async def open_queue_summary(
    session: AsyncSession,
    *,
    now: datetime,
    received_after: Sequence[datetime] = (),
    scope: Team | None = None,
) -> list[QueueGroup]:
    """Every open referral counted per (team, force, RAG), in one scan of ix_referral_open_summary."""
    # FILTER (SQLite >= 3.30, PostgreSQL) costs a third less than SUM(CASE ...) over 100,000 rows.
    overdue = func.count().filter(Referral.due_at < now)
    after = [func.count().filter(Referral.received_at > instant) for instant in received_after]
    query = (
        select(Referral.awaiting_team, Referral.force, Referral.risk, func.count(), overdue, *after)
        .where(_is_open(), *([handed_to(scope)] if scope is not None else []))
        .group_by(Referral.awaiting_team, Referral.force, Referral.risk)
    )
    return [
        QueueGroup(
            team=row[0],
            force=row[1],
            risk=row[2],
            open=int(row[3]),
            overdue=int(row[4] or 0),
            received_after=tuple(int(n or 0) for n in row[5:]),
        )
        for row in await session.execute(query)
    ]


def handed_to(team: Team) -> Any:
    """Referrals that have been handed to `team` at some point."""
    return Referral.handed_to.contains(f" {team.value} ", autoescape=True)


async def record_access(
    session: AsyncSession,
    *,
    referral_id: str,
    at: datetime,
    user_id: str,
    user_name: str,
    user_role: str,
    via: str,
) -> None:
    """Append one read of a referral's personal details to the access audit."""
    session.add(
        AccessAudit(
            referral_id=referral_id,
            at=at,
            user_id=user_id,
            user_name=user_name,
            user_role=user_role,
            via=via,
        )
    )


async def access_log(session: AsyncSession, referral_id: str, *, limit: int = 1000) -> list[AccessAudit]:
    """Reads of a referral's personal details, oldest first (the newest `limit`)."""
    rows = await session.scalars(
        select(AccessAudit)
        .where(AccessAudit.referral_id == referral_id)
        .order_by(AccessAudit.at.desc(), AccessAudit.id.desc())
        .limit(limit)
    )
    return list(reversed(list(rows)))


async def sign_in_failures(session: AsyncSession, key: str, *, since: datetime) -> list[datetime]:
    """When sign-in failed for `key` (a hashed email or address) since `since`, oldest first."""
    rows = await session.scalars(
        select(SignInFailure.at)
        .where(SignInFailure.email_key == key, SignInFailure.at >= since)
        .order_by(SignInFailure.at)
    )
    return list(rows)


async def add_sign_in_failure(
    session: AsyncSession, key: str, *, at: datetime, forget_before: datetime
) -> None:
    """Record a failed sign-in for `key`, dropping its failures too old to count."""
    await session.execute(
        delete(SignInFailure).where(SignInFailure.email_key == key, SignInFailure.at < forget_before)
    )
    session.add(SignInFailure(email_key=key, at=at))


async def clear_sign_in_failures(session: AsyncSession, key: str) -> None:
    """Forget `key`'s failed sign-ins (after a successful one)."""
    await session.execute(delete(SignInFailure).where(SignInFailure.email_key == key))
