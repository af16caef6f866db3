"""REFERRALS_RETENTION_DAYS and REFERRALS_PURGE_TIME: defaults, and bad values refused in one line."""

from __future__ import annotations

import pytest

from config import ConfigError, load_settings


def test_defaults_are_six_years_and_half_past_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REFERRALS_RETENTION_DAYS", raising=False)
    monkeypatch.delenv("REFERRALS_PURGE_TIME", raising=False)
    settings = load_settings()
    assert settings.retention_days == 6 * 365 + 2
    assert settings.purge_time == "02:30"


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFERRALS_RETENTION_DAYS", "30")
    monkeypatch.setenv("REFERRALS_PURGE_TIME", "23:05")
    settings = load_settings()
    assert settings.retention_days == 30
    assert settings.purge_time == "23:05"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REFERRALS_RETENTION_DAYS", "0"),
        ("REFERRALS_RETENTION_DAYS", "-1"),
        ("REFERRALS_RETENTION_DAYS", "six years"),
        ("REFERRALS_RETENTION_DAYS", "1.5"),
        ("REFERRALS_PURGE_TIME", "24:00"),
        ("REFERRALS_PURGE_TIME", "2:30"),
        ("REFERRALS_PURGE_TIME", "02:30:00"),
    ],
)
def test_bad_value_is_refused(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert message.startswith(f"{variable}: ")
    assert "\n" not in message
