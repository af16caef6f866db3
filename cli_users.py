"""`referrals users ...`: accounts and their API tokens, straight in the read model."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from config import Fatal, Settings
from models.enums import LOCAL_TEAMS, Role

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from models.tables import ApiToken

T = TypeVar("T")


def add_users_parser(sub: Any) -> None:
    """The `users` subcommands, on the `referrals` parser's subparsers."""
    users = sub.add_parser("users", help="manage users").add_subparsers(dest="users_command", required=True)
    create = users.add_parser("create", help="create a user and print its API token last")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--name", required=True)
    create.add_argument("--email", required=True)
    create.add_argument("--force")
    create.add_argument("--team", choices=[t.value for t in LOCAL_TEAMS])  # another authority has no users
    create.add_argument(
        "--expires-in-days", type=_days, help="the token expires after N days (default never)"
    )
    create.add_argument(
        "--password-stdin", action="store_true", help="read a sign-in password for the web pages from stdin"
    )
    set_password = users.add_parser("set-password", help="set a user's web sign-in password, read from stdin")
    set_password.add_argument("--email", required=True)
    users.add_parser("list", help="every user: id, email, role, force or team, active tokens")
    tokens = users.add_parser("tokens", help="a user's API tokens and their status (never the tokens)")
    tokens.add_argument("--email", required=True)
    token = users.add_parser("token", help="issue a new API token to a user, printed last (shown once)")
    token.add_argument("--email", required=True)
    token.add_argument("--expires-in-days", type=_days, help="the token expires after N days (default never)")
    expire = users.add_parser("expire", help="make an API token expire (now, or at --at)")
    expire.add_argument("token_id", metavar="TOKEN_ID")
    expire.add_argument("--at", help="ISO 8601 instant with offset, e.g. 2026-12-01T09:00:00Z (default now)")
    revoke = users.add_parser("revoke", help="revoke an API token for good")
    revoke.add_argument("token_id", metavar="TOKEN_ID")


def _days(text: str) -> int:
    from models.accounts import MAX_EXPIRES_IN_DAYS

    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if not 1 <= days <= MAX_EXPIRES_IN_DAYS:
        raise argparse.ArgumentTypeError(f"give 1 to {MAX_EXPIRES_IN_DAYS} days")
    return days


async def _in_transaction(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one read-model transaction (committed when it returns, rolled back on error)."""
    from sqlalchemy.exc import SQLAlchemyError

    from models.db import create_engine, session_factory

    engine = create_engine(settings.resolved_database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            return await work(session)
    except SQLAlchemyError as exc:
        # An unmigrated or unreachable read model: one line, not a driver traceback.
        first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise Fatal(f"the read model at {_safe_url(settings)} failed: {first}") from None
    finally:
        await engine.dispose()


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.resolved_database_url).render_as_string(hide_password=True)


def _when(instant: datetime | None, *, none: str = "-") -> str:
    return instant.isoformat(timespec="seconds") if instant is not None else none


async def users_command(settings: Settings, args: argparse.Namespace) -> None:
    """`referrals users ...`: accounts and their API tokens."""
    command = args.users_command
    if command == "create":
        await create_user(settings, args)
    elif command == "set-password":
        await set_password(settings, args.email, _password_from_stdin())
    elif command == "list":
        await list_users(settings)
    elif command == "tokens":
        await list_tokens(settings, email=args.email)
    elif command == "token":
        await issue_token(settings, email=args.email, expires_in_days=args.expires_in_days)
    elif command == "expire":
        at = _instant(args.at) if args.at is not None else None
        await expire_token(settings, token_id=args.token_id, at=at)
    elif command == "revoke":
        await revoke_token(settings, token_id=args.token_id)


async def create_user(settings: Settings, args: argparse.Namespace) -> None:
    """Create a user; its token is the last line of stdout."""
    from models import accounts

    role = Role(args.role)
    if role == Role.POLICE and not args.force:
        raise Fatal("--force is required for a police user")
    password_hash = hashed_password(_password_from_stdin()) if args.password_stdin else None

    async def work(session: AsyncSession) -> tuple[Any, ApiToken, str]:
        try:
            return await accounts.create_account(
                session,
                role=role,
                name=args.name,
                email=args.email,
                now=datetime.now(UTC),
                force=args.force,
                team=args.team,
                expires_in_days=args.expires_in_days,
                password_hash=password_hash,
            )
        except accounts.AccountError as exc:
            raise Fatal(str(exc)) from None

    user, row, token = await _in_transaction(settings, work)
    print(f"created {user.role} user {user.name} <{user.email}> id={user.id}")
    print(f"token id={row.id} expires {_when(row.expires_at, none='never')}")
    print(token)


async def list_users(settings: Settings) -> None:
    """One line per user: id, email, role, force or team, active tokens."""
    from models import accounts

    now = datetime.now(UTC)
    summaries = await _in_transaction(settings, lambda session: accounts.list_users(session, now=now))
    for item in summaries:
        user = item.user
        scope = user.force or user.team or "-"
        print(f"{user.id}\t{user.email}\t{user.role}\t{scope}\t{item.active_tokens} active tokens")


async def _user_by_email(session: AsyncSession, email: str) -> Any:
    from models import accounts

    user = await accounts.user_by_email(session, email)
    if user is None:
        raise Fatal(f"no user with email {email}")
    return user


async def list_tokens(settings: Settings, *, email: str) -> None:
    """A user's tokens: id, created, expires, revoked, status; never a token or its hash."""
    from models import accounts

    async def work(session: AsyncSession) -> list[ApiToken]:
        user = await _user_by_email(session, email)
        return await accounts.tokens_of(session, user.id)

    now = datetime.now(UTC)
    for row in await _in_transaction(settings, work):
        print(
            f"{row.id}\tcreated={_when(row.created_at)}\texpires={_when(row.expires_at, none='never')}"
            f"\trevoked={_when(row.revoked_at)}\t{accounts.token_status(row, now=now)}"
        )


async def issue_token(settings: Settings, *, email: str, expires_in_days: int | None) -> None:
    """A new token for a user; the token is the last line of stdout, shown this once."""
    from models import accounts

    async def work(session: AsyncSession) -> tuple[ApiToken, str]:
        user = await _user_by_email(session, email)
        return await accounts.issue_token(
            session, user, now=datetime.now(UTC), expires_in_days=expires_in_days
        )

    row, token = await _in_transaction(settings, work)
    print(f"issued token id={row.id} to {email}, expires {_when(row.expires_at, none='never')}")
    print(token)


def _instant(text: str) -> datetime:
    """An ISO 8601 instant with its offset (`Z` allowed), or Fatal."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise Fatal(f"--at {text!r} is not an ISO 8601 instant, e.g. 2026-12-01T09:00:00Z") from None
    if value.tzinfo is None:
        raise Fatal(f"--at {text!r} has no offset: add Z or e.g. +00:00")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise Fatal(f"--at {text!r} is out of range") from None


async def _token(session: AsyncSession, token_id: str) -> ApiToken:
    from models import accounts

    row = await accounts.get_token(session, token_id)
    if row is None:
        raise Fatal(f"no token with id {token_id}")
    return row


async def expire_token(settings: Settings, *, token_id: str, at: datetime | None) -> None:
    """Make a token expire now (or at `at`)."""
    from models import accounts

    async def work(session: AsyncSession) -> ApiToken:
        now = datetime.now(UTC)
        try:
            return await accounts.expire_token(
                session, await _token(session, token_id), at=at or now, now=now
            )
        except accounts.AccountError as exc:
            raise Fatal(str(exc)) from None

    row = await _in_transaction(settings, work)
    print(f"token {row.id} expires {_when(row.expires_at)}")


async def revoke_token(settings: Settings, *, token_id: str) -> None:
    """Revoke a token for good."""
    from models import accounts

    async def work(session: AsyncSession) -> ApiToken:
        return await accounts.revoke_token(session, await _token(session, token_id), now=datetime.now(UTC))

    row = await _in_transaction(settings, work)
    print(f"token {row.id} revoked at {_when(row.revoked_at)}")


def _password_from_stdin() -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise Fatal("give the password on stdin, e.g. `printf '%s\\n' \"$PASSWORD\" | referrals users ...`")
    return password


def hashed_password(password: str) -> str:
    """An Argon2 hash of a password that meets the rules, or Fatal."""
    from web.auth import hash_password

    try:
        return hash_password(password)
    except ValueError as exc:
        raise Fatal(str(exc)) from None


async def set_password(settings: Settings, email: str, password: str) -> None:
    """Set (or replace) a user's web sign-in password."""
    from models import repository

    password_hash = hashed_password(password)

    async def work(session: AsyncSession) -> None:
        user = await repository.user_by_email(session, email)
        if user is None:
            raise Fatal(f"no user with email {email}")
        user.password_hash = password_hash

    await _in_transaction(settings, work)
    print(f"password set for {email}")
