"""The policy's optional [delivery] fallback mailbox: validated like every other address."""

from __future__ import annotations

from datetime import datetime

import pytest

from activities.deadlines import DeadlineActivities
from models.enums import Risk, Team
from models.payloads import PlanHandoffInput
from models.policy import PolicyError, default_policy_text, load_policy, parse_policy

COMMENTED = '# fallback_email = "ppu@police.example"'


def with_fallback(address: str) -> str:
    """The built-in policy text with `fallback_email` set."""
    text = default_policy_text()
    assert COMMENTED in text
    return text.replace(COMMENTED, f'fallback_email = "{address}"')


def test_default_has_no_fallback_mailbox() -> None:
    assert load_policy().delivery.fallback_email is None


def test_fallback_mailbox_is_read_and_planned_after_the_manager(received_at: datetime) -> None:
    policy = parse_policy(with_fallback("ppu@police.example"))
    assert policy.delivery.fallback_email == "ppu@police.example"
    plan = DeadlineActivities(policy).plan(
        PlanHandoffInput(
            referral_id="r1",
            team=Team.EARLY_HELP,
            risk=Risk.GREEN,
            opened_at=received_at,
            referrer_email="a.example@police.example",
        )
    )
    assert plan.fallback == ["earlyhelp-manager@council.example", "ppu@police.example"]


def test_bad_fallback_address_is_refused_with_its_line() -> None:
    text = with_fallback("not an address")
    line = text.splitlines().index('fallback_email = "not an address"') + 1
    with pytest.raises(PolicyError) as refused:
        parse_policy(text, "p.toml")
    assert f"line {line}: delivery.fallback_email" in str(refused.value)
    assert "not an email address" in str(refused.value)
