"""Working-time arithmetic on random calendars: any zone, hours, days, holidays and closures.

tests/unit/test_calendar.py holds properties of the default (England) calendar; these add the
calendars a council could configure, including zones whose clocks change inside working hours.
"""

from __future__ import annotations

import functools
import os
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from activities.calendar import WorkingCalendar
from models.policy import DAY_NAMES, CalendarPolicy, Duration, Offset

ZONES = [
    "Europe/London",
    "UTC",
    "America/New_York",
    "Australia/Lord_Howe",  # a half-hour clock change
    "America/St_Johns",  # a -03:30 offset with summer time
    "Asia/Kathmandu",  # +05:45
    "Pacific/Chatham",  # +12:45, summer time
    "Africa/Casablanca",  # clocks change around Ramadan
]
#: `FUZZ_SCALE=20` multiplies every example count below, for a longer campaign.
SCALE = int(os.environ.get("FUZZ_SCALE", "1"))
PROPERTY = settings(max_examples=150 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOLERANCE = 1e-3  # seconds: float sums of microseconds


@functools.cache
def clock_changes(zone: str) -> tuple[datetime, ...]:
    """Every instant from 2024 to 2030 at which the zone's clocks change."""
    tz, changes = ZoneInfo(zone), []
    day = datetime(2024, 1, 1, tzinfo=UTC)
    while day < datetime(2031, 1, 1, tzinfo=UTC):
        after = day + timedelta(days=1)
        if day.astimezone(tz).utcoffset() != after.astimezone(tz).utcoffset():
            lo, hi = day, after
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                lo, hi = (
                    (lo, mid)
                    if mid.astimezone(tz).utcoffset() != lo.astimezone(tz).utcoffset()
                    else (mid, hi)
                )
            changes.append(hi.replace(microsecond=0))
        day = after
    return tuple(changes)


@st.composite
def calendars(draw: st.DrawFn) -> WorkingCalendar:
    """A calendar a policy file could describe; often with the small hours (clock changes) in it."""
    if draw(st.booleans()):
        start = draw(st.integers(0, 24 * 60 - 2))
        end = draw(st.integers(start + 1, 24 * 60 - 1))
    else:
        start = draw(st.integers(0, 4 * 60))
        end = draw(st.integers(start + 1, start + 5 * 60))
    policy = CalendarPolicy.model_validate(
        {
            "timezone": draw(st.sampled_from(ZONES)),
            "working_hours": f"{start // 60:02}:{start % 60:02}-{end // 60:02}:{end % 60:02}",
            "working_days": draw(st.lists(st.sampled_from(DAY_NAMES), min_size=1, unique=True)),
            "bank_holidays": draw(
                st.sampled_from(["england-and-wales", "scotland", "northern-ireland", "none"])
            ),
            "closures": draw(st.lists(st.dates(date(2024, 1, 1), date(2031, 12, 31)), max_size=20)),
        }
    )
    return WorkingCalendar(policy)


# Each instant is a real instant: generated in UTC, so no wall time is skipped or repeated.
any_instants = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)


def instants(calendar: WorkingCalendar) -> st.SearchStrategy[datetime]:
    """Any instant, or one within a few hours of one of the calendar's clock changes."""
    changes = clock_changes(calendar.policy.timezone)
    if not changes:
        return any_instants
    near = st.builds(
        lambda change, seconds: change + timedelta(seconds=seconds),
        st.sampled_from(changes),
        st.integers(-4 * 3600, 4 * 3600),
    )
    return any_instants | near


@st.composite
def scenes(draw: st.DrawFn, count: int = 1) -> tuple[WorkingCalendar, list[datetime]]:
    """A calendar and `count` instants for it."""
    calendar = draw(calendars())
    return calendar, [draw(instants(calendar)) for _ in range(count)]


working_durations = st.one_of(
    st.integers(1, 20 * 24 * 3600).map(lambda s: Duration(working=True, seconds=s)),
    st.integers(1, 2000).map(lambda n: Duration(working=True, days=n / 100)),
)
elapsed_durations = st.integers(0, 30 * 86400).map(lambda s: Duration(working=False, seconds=s))
HOLIDAYS = ["england-and-wales", "scotland", "northern-ireland", "none"]

# Working hours 00:00-03:00 across the October clock change in London: the wall-clock hour
# 01:00-02:00 happens twice.
NIGHT = WorkingCalendar(
    CalendarPolicy.model_validate({"working_hours": "00:00-03:00", "working_days": list(DAY_NAMES)})
)
OCTOBER_CHANGE = datetime(2026, 10, 25, 1, 10, tzinfo=UTC)  # 01:10 GMT, the second 01:10
MARCH_CHANGE = datetime(2026, 3, 29, 1, tzinfo=UTC)  # 01:00 GMT becomes 02:00 BST
Scene = tuple[WorkingCalendar, list[datetime]]


class TestAdding:
    @PROPERTY
    @given(scenes(), working_durations)
    @example((NIGHT, [OCTOBER_CHANGE]), Duration(working=True, seconds=600))
    @example((NIGHT, [MARCH_CHANGE]), Duration(working=True, seconds=3000))
    def test_lands_in_working_time_after_the_start_and_consumes_the_duration(
        self, scene: Scene, duration: Duration
    ) -> None:
        calendar, (start,) = scene
        result = calendar.add(start, duration)
        assert result.tzinfo is UTC
        assert result > start
        assert calendar.is_working_instant(result)
        spent = calendar.working_seconds_between(start, result)
        assert abs(spent - calendar.working_seconds(duration)) < TOLERANCE

    @PROPERTY
    @given(scenes(2), working_durations)
    def test_is_monotonic_in_the_start(self, scene: Scene, duration: Duration) -> None:
        calendar, instants = scene
        early, late = sorted(instants)
        assert calendar.add(early, duration) <= calendar.add(late, duration)

    @PROPERTY
    @given(scenes(), working_durations, working_durations)
    def test_is_monotonic_in_the_duration(self, scene: Scene, a: Duration, b: Duration) -> None:
        calendar, (start,) = scene
        short, long = sorted((a, b), key=calendar.working_seconds)
        assert calendar.add(start, short) <= calendar.add(start, long)

    @PROPERTY
    @given(scenes(), st.integers(1, 10 * 24 * 3600), st.integers(1, 10 * 24 * 3600))
    def test_adding_in_two_steps_is_adding_the_sum(self, scene: Scene, a: int, b: int) -> None:
        calendar, (start,) = scene

        def working(seconds: int) -> Duration:
            return Duration(working=True, seconds=seconds)

        once = calendar.add(start, working(a + b))
        twice = calendar.add(calendar.add(start, working(a)), working(b))
        assert once == twice

    @PROPERTY
    @given(scenes(), elapsed_durations)
    def test_elapsed_time_ignores_the_calendar(self, scene: Scene, duration: Duration) -> None:
        calendar, (start,) = scene
        assert calendar.add(start, duration) - start == duration.as_timedelta()
        assert start - calendar.subtract(start, duration) == duration.as_timedelta()


class TestSubtracting:
    @PROPERTY
    @given(scenes(), working_durations)
    @example((NIGHT, [OCTOBER_CHANGE]), Duration(working=True, seconds=600))
    def test_lands_in_working_time_before_the_end_and_consumes_the_duration(
        self, scene: Scene, duration: Duration
    ) -> None:
        calendar, (end,) = scene
        result = calendar.subtract(end, duration)
        assert result.tzinfo is UTC
        assert result < end
        assert calendar.is_working_instant(result)
        spent = calendar.working_seconds_between(result, end)
        assert abs(spent - calendar.working_seconds(duration)) < TOLERANCE

    @PROPERTY
    @given(scenes(), working_durations)
    def test_measuring_back_what_was_added(self, scene: Scene, duration: Duration) -> None:
        calendar, (start,) = scene
        back = calendar.subtract(calendar.add(start, duration), duration)
        # The same point in working time as the (snapped) start: no working time between them.
        assert calendar.working_seconds_between(min(back, start), max(back, start)) < TOLERANCE
        assert back >= calendar.previous_working_instant(start)


class TestMeasuring:
    @PROPERTY
    @given(scenes(3))
    def test_working_time_between_adds_up(self, scene: Scene) -> None:
        calendar, instants = scene
        first, middle, last = sorted(instants)
        whole = calendar.working_seconds_between(first, last)
        parts = calendar.working_seconds_between(first, middle) + calendar.working_seconds_between(
            middle, last
        )
        assert abs(whole - parts) < TOLERANCE

    @PROPERTY
    @given(scenes(2))
    def test_never_more_than_the_elapsed_time(self, scene: Scene) -> None:
        calendar, instants = scene
        first, last = sorted(instants)
        assume(last - first < timedelta(days=60))
        measured = calendar.working_seconds_between(first, last)
        assert 0 <= measured <= (last - first).total_seconds() + TOLERANCE

    @PROPERTY
    @given(scenes())
    def test_snapping_finds_working_instants_on_the_right_side(self, scene: Scene) -> None:
        calendar, (dt,) = scene
        after, before = calendar.next_working_instant(dt), calendar.previous_working_instant(dt)
        assert before <= dt <= after
        assert calendar.is_working_instant(after) and calendar.is_working_instant(before)
        assert calendar.next_working_instant(after) == after
        assert calendar.previous_working_instant(before) == before
        assert calendar.working_seconds_between(before, after) < TOLERANCE


class TestOffsets:
    @PROPERTY
    @given(scenes(), working_durations | elapsed_durations)
    def test_reminders_come_before_the_due_instant_and_escalations_after(
        self, scene: Scene, duration: Duration
    ) -> None:
        calendar, (due,) = scene
        before = calendar.offset(due, Offset(sign=-1, duration=duration))
        after = calendar.offset(due, Offset(sign=1, duration=duration))
        assert before <= due <= after
        assert calendar.offset(due, Offset()) == due


class TestClockChangesInsideWorkingHours:
    """A night calendar (00:00-03:00, every day) in London: the hour the clocks skip or repeat."""

    def test_the_examples_are_where_they_should_be(self) -> None:
        assert OCTOBER_CHANGE.astimezone(NIGHT.zone).fold == 1  # the second 01:10
        assert MARCH_CHANGE in clock_changes("Europe/London")

    def test_a_repeated_hour_is_worked_twice(self) -> None:
        night = datetime(2026, 10, 24, 23, tzinfo=UTC)  # 00:00 BST on Sunday 25 October
        assert NIGHT.working_seconds_between(night, night + timedelta(hours=6)) == 4 * 3600

    def test_a_skipped_hour_is_not_worked(self) -> None:
        night = datetime(2026, 3, 29, 0, tzinfo=UTC)  # 00:00 GMT on Sunday 29 March
        assert NIGHT.working_seconds_between(night, night + timedelta(hours=6)) == 2 * 3600

    def test_ten_minutes_after_the_second_ten_past_one(self) -> None:
        assert NIGHT.add(OCTOBER_CHANGE, Duration(working=True, seconds=600)) == OCTOBER_CHANGE + timedelta(
            minutes=10
        )
