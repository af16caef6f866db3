"""The policy's [integrations.early_help] section: Early Help's case system."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from activities.deadlines import DeadlineActivities
from models.enums import Risk, Team
from models.payloads import PlanHandoffInput
from models.policy import PolicyError, default_policy_text, parse_policy

SECTION = """
[integrations.early_help]
lookup_url = "https://ehm.example/api/cases?ref={police_reference}&ours={reference}"
lookup_auth_env = "EHM_TOKEN"
record_id_path = "cases.0.id"
poll_every = "PT10M"
webhook_secret_env = "EHM_WEBHOOK_SECRET"
"""


def test_the_section_is_optional() -> None:
    policy = parse_policy(default_policy_text())
    assert policy.integrations.early_help.lookup_url is None
    assert policy.integrations.early_help.webhook_secret_env is None


def test_a_configured_case_system() -> None:
    case_system = parse_policy(default_policy_text() + SECTION).integrations.early_help
    assert case_system.lookup_auth_env == "EHM_TOKEN"
    assert case_system.record_id_path == "cases.0.id"
    assert case_system.poll_every.as_timedelta() == timedelta(minutes=10)
    assert case_system.webhook_secret_env == "EHM_WEBHOOK_SECRET"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('poll_every = "1 working day"', "poll_every: must be elapsed time of at least a minute"),
        ('poll_every = "PT30S"', "poll_every: must be elapsed time of at least a minute"),
        ('lookup_url = "ftp://ehm.example/x"', "lookup_url: must be an http:// or https:// URL"),
        ('lookup_url = "https://ehm.example/{child_name}"', "unknown placeholder {child_name}"),
        ('lookup_auth_env = "EHM TOKEN"', "lookup_auth_env: must be the name of an environment variable"),
        ('record_id_path = "cases..id"', "record_id_path: must name keys"),
        ('secret = "hunter2"', "integrations.early_help.secret"),
    ],
)
def test_mistakes_name_the_key_and_line(line: str, message: str) -> None:
    text = default_policy_text() + "\n[integrations.early_help]\n" + line + "\n"
    with pytest.raises(PolicyError, match="line") as refused:
        parse_policy(text)
    assert message in str(refused.value)


def lookup_every(deadlines: DeadlineActivities, team: Team) -> timedelta | None:
    opened = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    input = PlanHandoffInput(
        referral_id="r", team=team, risk=Risk.AMBER, opened_at=opened, referrer_email="pc@police.example"
    )
    return deadlines.plan(input).lookup_every


def test_only_early_help_plans_ask_the_case_system() -> None:
    configured = DeadlineActivities(parse_policy(default_policy_text() + SECTION))
    assert lookup_every(configured, Team.EARLY_HELP) == timedelta(minutes=10)
    assert lookup_every(configured, Team.FRONT_DOOR) is None
    assert lookup_every(configured, Team.SOCIAL_CARE) is None
    assert lookup_every(DeadlineActivities(parse_policy(default_policy_text())), Team.EARLY_HELP) is None
