"""The dashboard's working-time ages agree with the calendar, and its age bands with the ages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from activities.calendar import WorkingCalendar
from models.policy import load_policy, parse_policy
from web.working_time import WorkingAge

CALENDAR = WorkingCalendar(load_policy().calendar)
POLICY_TEXT = (Path(__file__).parents[2] / "models" / "default_policy.toml").read_text()
NOW = datetime(2026, 3, 30, 10, 17, tzinfo=UTC)  # the Monday after the clocks went forward


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=60 * 24 * 40))
def test_age_is_the_calendars_working_time(minutes: int) -> None:
    ages = WorkingAge(CALENDAR, NOW)
    start = NOW - timedelta(minutes=minutes)
    assert abs(ages.seconds_since(start) - CALENDAR.working_seconds_between(start, NOW)) < 1e-6


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=60 * 24 * 40))
def test_received_after_n_days_ago_means_younger_than_n_days(minutes: int) -> None:
    ages = WorkingAge(CALENDAR, NOW)
    start = NOW - timedelta(minutes=minutes)
    days = ages.seconds_since(start) / CALENDAR.working_day_seconds
    for n, instant in zip((1, 2, 5), ages.days_ago((1, 2, 5)), strict=True):
        assert (start > instant) == (days < n), (n, start, instant, days)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=60 * 24 * 3))
def test_age_across_a_clock_change_inside_working_hours(minutes: int) -> None:
    # A night service (working 00:00-06:00 every day) works through the October change, when
    # 01:00-02:00 happens twice: the age must count it twice, as the calendar does.
    text = POLICY_TEXT.replace('working_hours = "09:00-17:00"', 'working_hours = "00:00-06:00"').replace(
        'working_days = ["mon", "tue", "wed", "thu", "fri"]',
        'working_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]',
    )
    assert text != POLICY_TEXT
    night = WorkingCalendar(parse_policy(text, "night policy").calendar)
    now = datetime(2026, 10, 27, 12, 0, tzinfo=UTC)  # the Tuesday after the clocks went back
    start = now - timedelta(minutes=minutes)
    ages = WorkingAge(night, now)
    assert abs(ages.seconds_since(start) - night.working_seconds_between(start, now)) < 1e-6


def test_descriptions() -> None:
    ages = WorkingAge(CALENDAR, NOW)
    day = CALENDAR.working_day_seconds
    assert ages.describe(0) == "0 min"
    assert ages.describe(40 * 60) == "40 min"
    assert ages.describe(5 * 3600 + 59) == "5 h"
    assert ages.describe(day) == "1 working day"
    assert ages.describe(2 * day + 3 * 3600 + 120) == "2 working days 3 h"
