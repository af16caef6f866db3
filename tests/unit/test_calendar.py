"""Working time: deadlines skip nights, weekends, each nation's bank holidays and local closures."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activities.calendar import MAX_SCAN_DAYS, WorkingCalendar
from models.policy import CalendarPolicy, Duration, parse_duration, parse_offset

LONDON = ZoneInfo("Europe/London")
ENGLAND = WorkingCalendar(CalendarPolicy())
SCOTLAND = WorkingCalendar(CalendarPolicy(bank_holidays="scotland"))
NORTHERN_IRELAND = WorkingCalendar(CalendarPolicy(bank_holidays="northern-ireland"))


def london(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=LONDON)


def calendar(**policy: Any) -> WorkingCalendar:
    return WorkingCalendar(CalendarPolicy.model_validate(policy))


class TestAddingWorkingTime:
    def test_friday_afternoon_plus_four_hours_is_monday_noon(self) -> None:
        result = ENGLAND.add(london(2026, 3, 6, 16), parse_duration("4 working hours"))
        assert result == london(2026, 3, 9, 12)

    def test_results_are_in_utc(self) -> None:
        result = ENGLAND.add(london(2026, 6, 5, 16), parse_duration("4 working hours"))
        assert result.tzinfo is UTC
        assert result == datetime(2026, 6, 8, 11, tzinfo=UTC)  # noon BST

    def test_one_working_day_is_a_full_day_of_working_hours(self) -> None:
        assert ENGLAND.add(london(2026, 3, 4, 10), parse_duration("1 working day")) == london(2026, 3, 5, 10)
        assert ENGLAND.add(london(2026, 3, 6, 16), parse_duration("1 working day")) == london(2026, 3, 9, 16)
        assert ENGLAND.add(london(2026, 3, 4, 10), parse_duration("0.5 working days")) == london(
            2026, 3, 4, 14
        )

    def test_working_day_length_follows_the_calendar_hours(self) -> None:
        mornings = calendar(working_hours="08:00-12:00")
        assert mornings.working_day_seconds == 4 * 3600
        assert mornings.add(london(2026, 3, 4, 11), parse_duration("1 working day")) == london(2026, 3, 5, 11)

    def test_landing_exactly_at_day_end_stays_at_day_end(self) -> None:
        assert ENGLAND.add(london(2026, 3, 5, 10), parse_duration("7 working hours")) == london(
            2026, 3, 5, 17
        )

    def test_a_referral_received_at_the_weekend_is_due_at_monday_close(self) -> None:
        assert ENGLAND.add(london(2026, 3, 7, 12), parse_duration("1 working day")) == london(2026, 3, 9, 17)

    @pytest.mark.parametrize(("hour", "minute"), [(17, 0), (17, 30), (23, 59)])
    def test_after_hours_the_clock_starts_next_morning(self, hour: int, minute: int) -> None:
        start = london(2026, 3, 5, hour, minute)
        assert ENGLAND.add(start, parse_duration("1 working hour")) == london(2026, 3, 6, 10)

    def test_before_hours_the_clock_starts_at_nine(self) -> None:
        assert ENGLAND.add(london(2026, 3, 5, 7), parse_duration("1 working hour")) == london(2026, 3, 5, 10)

    def test_weekend_working_days_are_honoured(self) -> None:
        every_day = calendar(working_days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"])
        assert every_day.add(london(2026, 3, 6, 16), parse_duration("4 working hours")) == london(
            2026, 3, 7, 12
        )

    def test_other_time_zones(self) -> None:
        new_york = ZoneInfo("America/New_York")
        cal = calendar(timezone="America/New_York", bank_holidays="none")
        start = datetime(2026, 3, 6, 16, tzinfo=new_york)
        assert cal.add(start, parse_duration("2 working hours")) == datetime(2026, 3, 9, 10, tzinfo=new_york)


class TestBankHolidaysAndClosures:
    def test_christmas_2026_in_england(self) -> None:
        # Thu 24 works; Fri 25 Christmas, Mon 28 Boxing Day (substitute) are holidays.
        start = london(2026, 12, 23, 10)
        assert ENGLAND.add(start, parse_duration("1 working day")) == london(2026, 12, 24, 10)
        assert ENGLAND.add(start, parse_duration("2 working days")) == london(2026, 12, 29, 10)
        assert ENGLAND.add(start, parse_duration("3 working days")) == london(2026, 12, 30, 10)

    def test_a_christmas_eve_closure(self) -> None:
        closed = calendar(closures=["2026-12-24"])
        assert not closed.is_working_day(date(2026, 12, 24))
        assert closed.add(london(2026, 12, 23, 10), parse_duration("1 working day")) == london(
            2026, 12, 29, 10
        )

    def test_new_year_differs_between_england_and_scotland(self) -> None:
        start, day = london(2026, 12, 31, 10), parse_duration("1 working day")
        assert ENGLAND.add(start, day) == london(2027, 1, 4, 10)
        assert SCOTLAND.add(start, day) == london(2027, 1, 5, 10)

    @pytest.mark.parametrize(
        ("day", "england", "scotland", "northern_ireland"),
        [
            (date(2026, 8, 3), True, False, True),  # Scottish summer bank holiday
            (date(2026, 8, 31), False, True, False),  # late summer bank holiday
            (date(2027, 1, 4), True, False, True),  # Scottish New Year, observed
            (date(2026, 11, 30), True, False, True),  # St Andrew's Day
            (date(2026, 3, 17), True, True, False),  # St Patrick's Day
            (date(2026, 7, 13), True, True, False),  # Battle of the Boyne, observed
            (date(2026, 4, 6), False, True, False),  # Easter Monday
            (date(2026, 12, 28), False, False, False),  # Boxing Day, observed
            (date(2026, 3, 18), True, True, True),  # an ordinary Wednesday
        ],
    )
    def test_each_nation_has_its_own_bank_holidays(
        self, day: date, england: bool, scotland: bool, northern_ireland: bool
    ) -> None:
        assert ENGLAND.is_working_day(day) is england
        assert SCOTLAND.is_working_day(day) is scotland
        assert NORTHERN_IRELAND.is_working_day(day) is northern_ireland

    def test_one_off_bank_holidays_come_from_the_library(self) -> None:
        assert not ENGLAND.is_working_day(date(2022, 9, 19))  # State funeral
        assert not ENGLAND.is_working_day(date(2023, 5, 8))  # Coronation

    def test_no_bank_holidays(self) -> None:
        assert calendar(bank_holidays="none").is_working_day(date(2026, 12, 25))

    def test_a_calendar_with_no_working_day_is_refused(self) -> None:
        first_monday = date(2026, 1, 5)
        mondays = [first_monday + timedelta(weeks=n) for n in range(MAX_SCAN_DAYS // 7 + 2)]
        closed = calendar(working_days=["mon"], bank_holidays="none", closures=mondays)
        with pytest.raises(ValueError, match="no working day within"):
            closed.add(london(2026, 1, 1, 10), parse_duration("1 working hour"))
        with pytest.raises(ValueError, match="no working day within"):
            closed.subtract(london(2036, 3, 1, 10), parse_duration("1 working hour"))


class TestSummerTime:
    def test_march_change(self) -> None:
        start = london(2026, 3, 27, 16)  # Friday before the clocks go forward on Sunday 29th
        result = ENGLAND.add(start, parse_duration("4 working hours"))
        assert result == london(2026, 3, 30, 12)
        assert result == datetime(2026, 3, 30, 11, tzinfo=UTC)
        assert ENGLAND.working_seconds_between(start, result) == 4 * 3600

    def test_october_change(self) -> None:
        start = london(2026, 10, 23, 16)  # Friday before the clocks go back on Sunday 25th
        result = ENGLAND.add(start, parse_duration("4 working hours"))
        assert result == datetime(2026, 10, 26, 12, tzinfo=UTC)
        assert ENGLAND.subtract(result, parse_duration("4 working hours")) == start


class TestSubtracting:
    def test_an_hour_before_monday_half_past_nine_is_friday_half_past_four(self) -> None:
        assert ENGLAND.subtract(london(2026, 3, 9, 9, 30), parse_duration("1 working hour")) == london(
            2026, 3, 6, 16, 30
        )

    def test_across_christmas(self) -> None:
        due = london(2026, 12, 29, 9, 30)
        assert ENGLAND.subtract(due, parse_duration("1 working hour")) == london(2026, 12, 24, 16, 30)

    def test_from_outside_hours_starts_at_previous_close(self) -> None:
        assert ENGLAND.subtract(london(2026, 3, 7, 12), parse_duration("1 working hour")) == london(
            2026, 3, 6, 16
        )
        assert ENGLAND.subtract(london(2026, 3, 6, 8), parse_duration("1 working hour")) == london(
            2026, 3, 5, 16
        )

    def test_landing_exactly_at_day_start_stays_there(self) -> None:
        assert ENGLAND.subtract(london(2026, 3, 5, 10), parse_duration("1 working hour")) == london(
            2026, 3, 5, 9
        )


class TestElapsedTimeIgnoresTheCalendar:
    def test_seconds_at_the_weekend(self) -> None:
        start = london(2026, 3, 7, 12)
        assert ENGLAND.add(start, parse_duration("PT60S")) == london(2026, 3, 7, 12, 1)
        assert ENGLAND.subtract(start, parse_duration("PT60S")) == london(2026, 3, 7, 11, 59)

    def test_days_are_24_hours_even_across_a_clock_change(self) -> None:
        start = london(2026, 3, 28, 12)  # noon GMT; the clocks go forward overnight on Sunday
        result = ENGLAND.add(start, parse_duration("P2D"))
        assert result == datetime(2026, 3, 30, 12, tzinfo=UTC)  # 13:00 BST: 48 real hours later
        assert result.tzinfo is UTC
        assert ENGLAND.subtract(result, parse_duration("P2D")) == start

    def test_elapsed_duration_has_no_working_seconds(self) -> None:
        with pytest.raises(ValueError, match="elapsed time"):
            ENGLAND.working_seconds(parse_duration("PT1H"))


class TestOffsets:
    def test_due_is_the_due_instant(self) -> None:
        due = london(2026, 3, 7, 12)  # at the weekend, and not moved
        assert ENGLAND.offset(due, parse_offset("due")) == due
        assert ENGLAND.offset(due, parse_offset("due + 0 working hours")) == due

    def test_reminder_and_escalations(self) -> None:
        due = london(2026, 3, 9, 9, 30)
        assert ENGLAND.offset(due, parse_offset("due - 1 working hour")) == london(2026, 3, 6, 16, 30)
        assert ENGLAND.offset(due, parse_offset("due + 1 working day")) == london(2026, 3, 10, 9, 30)
        assert ENGLAND.offset(due, parse_offset("due + PT10S")) == london(2026, 3, 9, 9, 30) + timedelta(
            seconds=10
        )


class TestInstantsAndAges:
    def test_working_instants_include_both_ends(self) -> None:
        assert ENGLAND.is_working_instant(london(2026, 3, 5, 9))
        assert ENGLAND.is_working_instant(london(2026, 3, 5, 17))
        assert not ENGLAND.is_working_instant(london(2026, 3, 5, 17, 1))
        assert not ENGLAND.is_working_instant(london(2026, 3, 7, 12))
        assert ENGLAND.is_working_instant(datetime(2026, 6, 5, 8, tzinfo=UTC))  # 09:00 BST

    def test_working_seconds_between(self) -> None:
        assert ENGLAND.working_seconds_between(london(2026, 3, 6, 16), london(2026, 3, 9, 12)) == 4 * 3600
        assert (
            ENGLAND.working_seconds_between(london(2026, 12, 23, 10), london(2026, 12, 30, 10))
            == 3 * 8 * 3600
        )
        assert ENGLAND.working_seconds_between(london(2026, 3, 9, 12), london(2026, 3, 6, 16)) == 0
        assert ENGLAND.working_seconds_between(london(2026, 3, 7, 1), london(2026, 3, 8, 23)) == 0

    @pytest.mark.parametrize(
        "call",
        [
            lambda dt: ENGLAND.add(dt, parse_duration("1 working hour")),
            lambda dt: ENGLAND.subtract(dt, parse_duration("PT1H")),
            lambda dt: ENGLAND.is_working_instant(dt),
            lambda dt: ENGLAND.working_seconds_between(dt, dt),
            lambda dt: ENGLAND.offset(dt, parse_offset("due")),
        ],
    )
    def test_naive_datetimes_are_refused(self, call: Any) -> None:
        with pytest.raises(ValueError, match="no time zone"):
            call(datetime(2026, 3, 5, 10))


# Properties over random instants 2024-2030 and working durations from a minute to ten days.
instants = st.datetimes(
    min_value=datetime(2024, 1, 1),
    max_value=datetime(2030, 12, 31),
    timezones=st.sampled_from([UTC, LONDON]),
    allow_imaginary=False,
)
working_durations = st.one_of(
    st.integers(60, 10 * 8 * 3600).map(lambda s: Duration(working=True, seconds=s)),
    st.integers(1, 1000).map(lambda n: Duration(working=True, days=n / 100)),
)
PROPERTY = settings(max_examples=200, deadline=None)


def is_day_end(dt: datetime) -> bool:
    return dt.astimezone(LONDON).time() == time(17)


class TestProperties:
    @PROPERTY
    @given(instants, working_durations)
    def test_add_lands_in_working_time_and_consumes_exactly_the_duration(
        self, start: datetime, duration: Duration
    ) -> None:
        result = ENGLAND.add(start, duration)
        assert ENGLAND.is_working_instant(result)
        assert result > start
        assert abs(ENGLAND.working_seconds_between(start, result) - ENGLAND.working_seconds(duration)) < 1e-3

    @PROPERTY
    @given(instants, instants, working_durations)
    def test_add_is_monotonic_in_start(self, a: datetime, b: datetime, duration: Duration) -> None:
        early, late = sorted((a, b))
        assert ENGLAND.add(early, duration) <= ENGLAND.add(late, duration)

    @PROPERTY
    @given(instants, st.integers(60, 10 * 8 * 3600), st.integers(60, 10 * 8 * 3600))
    def test_add_is_monotonic_in_duration(self, start: datetime, a: int, b: int) -> None:
        short, long = (Duration(working=True, seconds=s) for s in sorted((a, b)))
        assert ENGLAND.add(start, short) <= ENGLAND.add(start, long)

    @PROPERTY
    @given(instants, working_durations)
    def test_subtract_undoes_add(self, start: datetime, duration: Duration) -> None:
        snapped = ENGLAND.next_working_instant(start)
        back = ENGLAND.subtract(ENGLAND.add(start, duration), duration)
        if is_day_end(snapped):
            # Close of one working day and the next opening are the same point in working time.
            assert back == ENGLAND.next_working_instant(snapped + timedelta(microseconds=1))
            assert ENGLAND.working_seconds_between(snapped, back) == 0
        else:
            assert back == snapped

    @PROPERTY
    @given(instants, working_durations)
    def test_subtract_lands_in_working_time_and_consumes_exactly_the_duration(
        self, end: datetime, duration: Duration
    ) -> None:
        result = ENGLAND.subtract(end, duration)
        assert ENGLAND.is_working_instant(result)
        assert result < end
        assert abs(ENGLAND.working_seconds_between(result, end) - ENGLAND.working_seconds(duration)) < 1e-3

    @PROPERTY
    @given(st.integers(2024, 2030))
    def test_england_and_scotland_disagree_every_year(self, year: int) -> None:
        days = (date(year, 1, 1) + timedelta(days=n) for n in range(365))
        assert any(ENGLAND.is_working_day(d) != SCOTLAND.is_working_day(d) for d in days)
