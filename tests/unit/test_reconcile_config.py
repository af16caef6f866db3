"""REFERRALS_RECONCILE_EVERY and REFERRALS_ADMIN_EMAILS: defaults, forms accepted, bad values refused."""

from __future__ import annotations

from datetime import timedelta

import pytest

from config import ConfigError, load_settings


def test_defaults_are_five_minutes_and_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REFERRALS_RECONCILE_EVERY", raising=False)
    monkeypatch.delenv("REFERRALS_ADMIN_EMAILS", raising=False)
    settings = load_settings()
    assert settings.reconcile_every == timedelta(minutes=5)
    assert settings.admin_emails == []


@pytest.mark.parametrize(("value", "seconds"), [("300", 300), ("PT2M", 120), ("60", 60), ("P1D", 86400)])
def test_interval_in_seconds_or_iso(monkeypatch: pytest.MonkeyPatch, value: str, seconds: int) -> None:
    monkeypatch.setenv("REFERRALS_RECONCILE_EVERY", value)
    assert load_settings().reconcile_every == timedelta(seconds=seconds)


def test_admin_emails_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFERRALS_ADMIN_EMAILS", " duty@council.example,ops@council.example , ")
    assert load_settings().admin_emails == ["duty@council.example", "ops@council.example"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REFERRALS_RECONCILE_EVERY", "59"),
        ("REFERRALS_RECONCILE_EVERY", "P2D"),
        ("REFERRALS_RECONCILE_EVERY", "five minutes"),
        ("REFERRALS_ADMIN_EMAILS", "duty@council.example,not-an-address"),
        ("REFERRALS_ADMIN_EMAILS", "a b@council.example"),
    ],
)
def test_bad_value_is_refused(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert str(refused.value).startswith(variable + ":")
    assert "\n" not in str(refused.value)
