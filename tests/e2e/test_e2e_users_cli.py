"""`referrals users ...` as an operator runs it: real processes against SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from e2e_support import base_env, run_cli

from models import repository
from models.db import create_engine, session_factory
from tests.conftest import fresh_database_url

pytestmark = pytest.mark.slow


class Cli:
    """`referrals` against one read model."""

    def __init__(self, database_url: str, cwd: Path) -> None:
        self.database_url = database_url
        self.cwd = cwd
        self.env = base_env(REFERRALS_DATABASE_URL=database_url, REFERRALS_DATA_DIR=str(cwd / "data"))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run to completion."""
        return run_cli(list(args), self.env, self.cwd)

    def ok(self, *args: str) -> list[str]:
        """Run; it must succeed; its stdout lines."""
        result = self.run(*args)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        return result.stdout.strip().splitlines()

    def fails(self, *args: str, says: str) -> None:
        """Run; it must fail with one line on stderr containing `says`, and no traceback."""
        result = self.run(*args)
        assert result.returncode != 0, result.stdout
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("referrals: ") and says in lines[0], lines[0]

    def create(self, email: str, *extra: str, role: str = "manager") -> tuple[str, str]:
        """`users create`; (token id, token) from its output, the token being the last line."""
        lines = self.ok("users", "create", "--role", role, "--name", f"A {role}", "--email", email, *extra)
        token_line = next(line for line in lines if line.startswith("token id="))
        return token_line.split()[1].removeprefix("id="), lines[-1]

    def tokens(self, email: str) -> dict[str, list[str]]:
        """`users tokens`: id -> the line's tab-separated fields."""
        return {
            line.split("\t")[0]: line.split("\t") for line in self.ok("users", "tokens", "--email", email)
        }

    async def user_of(self, token: str) -> str | None:
        """The email of the user this token authenticates now (None: refused)."""
        engine = create_engine(self.database_url)
        try:
            async with session_factory(engine)() as session:
                user = await repository.user_for_token(session, token, now=datetime.now(UTC))
                return user.email if user is not None else None
        finally:
            await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    """The command against a fresh, migrated read model."""
    for url in fresh_database_url(request.param, tmp_path):
        yield Cli(url, tmp_path)


async def test_create_list_issue_and_show_tokens(cli: Cli) -> None:
    first_id, first = cli.create("manager@council.example", "--expires-in-days", "30")
    _, police = cli.create("pc@police.example", "--force", "Cumbria Constabulary", role="police")
    assert first.startswith("rt_") and await cli.user_of(first) == "manager@council.example"
    assert await cli.user_of(police) == "pc@police.example"

    lines = cli.ok("users", "token", "--email", "manager@council.example", "--expires-in-days", "2")
    second = lines[-1]
    assert second.startswith("rt_") and second != first
    assert await cli.user_of(second) == "manager@council.example"

    users = [line.split("\t") for line in cli.ok("users", "list")]
    assert [(u[1], u[2], u[3], u[4]) for u in users] == [
        ("manager@council.example", "manager", "-", "2 active tokens"),
        ("pc@police.example", "police", "Cumbria Constabulary", "1 active tokens"),
    ]

    output = cli.run("users", "tokens", "--email", "manager@council.example").stdout
    for secret in (first, second, repository.hash_token(first), repository.hash_token(second)):
        assert secret not in output
    tokens = cli.tokens("manager@council.example")
    assert len(tokens) == 2 and first_id in tokens
    fields = tokens[first_id]
    assert fields[-1] == "active" and fields[3] == "revoked=-"
    expires = datetime.fromisoformat(fields[2].removeprefix("expires="))
    assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=5)


async def test_revoke_and_expire_stop_a_token(cli: Cli) -> None:
    revoked_id, revoked = cli.create("one@council.example")
    expired_id, expired = cli.create("two@council.example")
    later_id, later = cli.create("three@council.example")

    cli.ok("users", "revoke", revoked_id)
    assert await cli.user_of(revoked) is None
    assert cli.tokens("one@council.example")[revoked_id][-1] == "revoked"

    cli.ok("users", "expire", expired_id)
    assert await cli.user_of(expired) is None
    assert cli.tokens("two@council.example")[expired_id][-1] == "expired"
    # An expired token is not brought back by a later expiry.
    cli.fails("users", "expire", expired_id, "--at", "2999-01-01T00:00:00Z", says="issue a new one")
    assert await cli.user_of(expired) is None

    cli.ok("users", "expire", later_id, "--at", "2999-01-01T09:00:00+01:00")
    assert await cli.user_of(later) == "three@council.example"
    assert cli.tokens("three@council.example")[later_id][2] == "expires=2999-01-01T08:00:00+00:00"

    assert [line.split("\t")[4] for line in cli.ok("users", "list")] == [
        "0 active tokens",
        "0 active tokens",
        "1 active tokens",
    ]


async def test_mistakes_get_one_line(cli: Cli) -> None:
    token_id, _ = cli.create("someone@council.example")
    cli.fails("users", "tokens", "--email", "nobody@council.example", says="no user with email")
    cli.fails("users", "token", "--email", "nobody@council.example", says="no user with email")
    cli.fails("users", "revoke", "0" * 32, says="no token with id")
    cli.fails("users", "expire", "not-an-id", says="no token with id")
    cli.fails("users", "expire", token_id, "--at", "2030-01-01T00:00:00", says="no offset")
    cli.fails("users", "expire", token_id, "--at", "next week", says="not an ISO 8601 instant")
    cli.fails(
        "users",
        "create",
        "--role",
        "manager",
        "--name",
        "X",
        "--email",
        "SOMEONE@council.example",
        says="exists",
    )
    cli.fails("users", "create", "--role", "police", "--name", "X", "--email", "x@p.example", says="--force")
    bad_days = cli.run("users", "token", "--email", "someone@council.example", "--expires-in-days", "0")
    assert bad_days.returncode != 0 and "1 to 3650 days" in bad_days.stderr


def test_an_unmigrated_read_model_is_one_line(tmp_path: Path) -> None:
    cli = Cli(f"sqlite:///{tmp_path / 'empty.db'}", tmp_path)
    cli.fails("users", "list", says="the read model at")
