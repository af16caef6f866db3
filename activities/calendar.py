"""Working time: adds and subtracts working hours across weekends, bank holidays and closures.

Pure code (no Temporal): the deadline activity calls it, and so do tests and benchmarks.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays

from models.policy import CalendarPolicy, Duration, Offset

#: How far to look for a working day before deciding the calendar has none (about ten years).
MAX_SCAN_DAYS = 3700

_SUBDIVISIONS = {"england-and-wales": "ENG", "scotland": "SCT", "northern-ireland": "NIR"}
_ONE_DAY = timedelta(days=1)
_ONE_MICROSECOND = timedelta(microseconds=1)


def _us(t: time) -> int:
    """Microseconds since midnight of a wall-clock time."""
    return ((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000 + t.microsecond


def _time(us: int) -> time:
    seconds, micro = divmod(us, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return time(hour, minute, second, micro)


def _require_aware(dt: datetime) -> None:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{dt!r} has no time zone: working time needs an aware datetime")


class WorkingCalendar:
    """Working days and hours of one policy; all results are aware datetimes in UTC."""

    def __init__(self, policy: CalendarPolicy) -> None:
        self.policy = policy
        self.zone = ZoneInfo(policy.timezone)
        self._start = _us(policy.working_hours[0])
        self._end = _us(policy.working_hours[1])
        self._days = policy.working_days
        self._closures = frozenset(policy.closures)
        self._subdivision = _SUBDIVISIONS.get(policy.bank_holidays)
        self._holidays: dict[int, frozenset[date]] = {}
        self._windows: dict[date, tuple[datetime, datetime]] = {}

    @property
    def working_day_seconds(self) -> float:
        """Length of one working day, e.g. 28800 for 09:00-17:00."""
        return (self._end - self._start) / 1_000_000

    def working_seconds(self, duration: Duration) -> float:
        """How much working time a working duration stands for in this calendar."""
        return self._duration_us(duration) / 1_000_000

    def holidays_in(self, year: int) -> frozenset[date]:
        """Bank holidays of the calendar's nation in a year (closures not included)."""
        cached = self._holidays.get(year)
        if cached is None:
            if self._subdivision is None:
                cached = frozenset()
            else:
                found = holidays.country_holidays("GB", subdiv=self._subdivision, years=year)
                cached = frozenset(d for d in found if d.year == year)
            self._holidays[year] = cached
        return cached

    def is_working_day(self, d: date) -> bool:
        """True on a working weekday that is neither a bank holiday nor a closure."""
        return d.weekday() in self._days and d not in self._closures and d not in self.holidays_in(d.year)

    def is_working_instant(self, dt: datetime) -> bool:
        """True when `dt` falls within its day's working hours (ends included) on a working day."""
        _require_aware(dt)
        d = dt.astimezone(self.zone).date()
        if not self.is_working_day(d):
            return False
        opens, closes = self._window(d)
        return opens <= dt <= closes

    def next_working_instant(self, dt: datetime) -> datetime:
        """`dt` if it is working time, else the start of the next working day (UTC)."""
        _, opens, _ = self._first_window_ending_at_or_after(dt)
        return max(dt.astimezone(UTC), opens)

    def previous_working_instant(self, dt: datetime) -> datetime:
        """`dt` if it is working time, else the end of the previous working day (UTC)."""
        _, _, closes = self._last_window_opening_at_or_before(dt)
        return min(dt.astimezone(UTC), closes)

    def add(self, start: datetime, duration: Duration) -> datetime:
        """The instant `duration` after `start`; working time skips nights, weekends, holidays."""
        _require_aware(start)
        if not duration.working:
            # In UTC: aware arithmetic in a local zone is wall-clock, wrong by an hour across DST.
            return start.astimezone(UTC) + duration.as_timedelta()
        remaining = timedelta(microseconds=self._duration_us(duration))
        d, opens, closes = self._first_window_ending_at_or_after(start)
        cursor = max(start.astimezone(UTC), opens)
        for _ in range(self._max_days(remaining)):
            if remaining <= closes - cursor:
                return cursor + remaining
            remaining -= closes - cursor
            d = self._next_working_day(d)
            cursor, closes = self._window(d)
        raise AssertionError("unreachable: each working day consumes working time")  # pragma: no cover

    def subtract(self, end: datetime, duration: Duration) -> datetime:
        """The instant `duration` before `end`, counting working time backwards for working durations."""
        _require_aware(end)
        if not duration.working:
            return end.astimezone(UTC) - duration.as_timedelta()
        remaining = timedelta(microseconds=self._duration_us(duration))
        d, opens, closes = self._last_window_opening_at_or_before(end)
        cursor = min(end.astimezone(UTC), closes)
        for _ in range(self._max_days(remaining)):
            if remaining <= cursor - opens:
                return cursor - remaining
            remaining -= cursor - opens
            d = self._previous_working_day(d)
            opens, cursor = self._window(d)
        raise AssertionError("unreachable: each working day consumes working time")  # pragma: no cover

    def offset(self, due: datetime, offset: Offset) -> datetime:
        """The instant of a ladder step: `due` moved by the offset (a zero offset is `due` itself), in UTC."""
        _require_aware(due)
        if offset.duration is None or offset.duration.is_zero:
            return due.astimezone(UTC)
        if offset.sign < 0:
            return self.subtract(due, offset.duration)
        return self.add(due, offset.duration)

    def working_seconds_between(self, a: datetime, b: datetime) -> float:
        """Working time from `a` to `b` in seconds, 0 if `b` is not after `a`."""
        _require_aware(a)
        _require_aware(b)
        if b <= a:
            return 0.0
        total = timedelta(0)
        d, last = a.astimezone(self.zone).date(), b.astimezone(self.zone).date()
        # One step per calendar day in the span: the span is the caller's, not a policy's.
        while d <= last:
            if self.is_working_day(d):
                opens, closes = self._window(d)
                total += max(timedelta(0), min(b, closes) - max(a, opens))
            d += _ONE_DAY
        return total / _ONE_MICROSECOND / 1_000_000

    def _duration_us(self, duration: Duration) -> int:
        if not duration.working:
            raise ValueError(f"{duration} is elapsed time, not working time")
        if duration.days:
            return round(duration.days * (self._end - self._start))
        return duration.seconds * 1_000_000

    def _max_days(self, remaining: timedelta) -> int:
        # After the first (partial) day every working day consumes a full day's working time,
        # bar the few days whose clocks change inside working hours (at most an hour or two less).
        return 2 * (remaining // timedelta(microseconds=self._end - self._start)) + 30

    def _window(self, d: date) -> tuple[datetime, datetime]:
        """The working hours of day `d` as real instants (UTC), cached.

        Working time is real time inside the hours: when the clocks go back during them the
        repeated hour is worked twice, and an hour they skip is not worked at all.
        """
        window = self._windows.get(d)
        if window is None:
            window = (
                self._instant(d, self._start, earliest=True),
                self._instant(d, self._end, earliest=False),
            )
            if len(self._windows) > 50_000:  # a long-lived process: keep the cache bounded
                self._windows.clear()
            self._windows[d] = window
        return window

    def _instant(self, d: date, us: int, *, earliest: bool) -> datetime:
        """The instant a wall-clock time of day `d` happens, in UTC.

        A time the clocks pass twice is its earliest or latest occurrence; a time they skip
        happens at the instant of the change.
        """
        wall = datetime.combine(d, _time(us))
        first = wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        if first <= second:  # the same instant, or a repeated time (fold 0 is the earlier)
            return first if earliest else second
        # Skipped: fold 0 reads it with the offset before the change, fold 1 with the one after,
        # which brackets the change; find it to the microsecond.
        lo, hi = second, first
        before = lo.astimezone(self.zone).utcoffset()
        while hi - lo > _ONE_MICROSECOND:
            mid = lo + (hi - lo) // 2
            lo, hi = (mid, hi) if mid.astimezone(self.zone).utcoffset() == before else (lo, mid)
        return hi

    def _first_window_ending_at_or_after(self, dt: datetime) -> tuple[date, datetime, datetime]:
        _require_aware(dt)
        d = dt.astimezone(self.zone).date()
        if not self.is_working_day(d) or self._window(d)[1] < dt:
            d = self._next_working_day(d)
        return (d, *self._window(d))

    def _last_window_opening_at_or_before(self, dt: datetime) -> tuple[date, datetime, datetime]:
        _require_aware(dt)
        d = dt.astimezone(self.zone).date()
        if not self.is_working_day(d) or self._window(d)[0] > dt:
            d = self._previous_working_day(d)
        return (d, *self._window(d))

    def _next_working_day(self, d: date) -> date:
        return self._scan(d, _ONE_DAY, "after")

    def _previous_working_day(self, d: date) -> date:
        return self._scan(d, -_ONE_DAY, "before")

    def _scan(self, origin: date, step: timedelta, direction: str) -> date:
        d = origin
        for _ in range(MAX_SCAN_DAYS):
            d += step
            if self.is_working_day(d):
                return d
        raise ValueError(f"the calendar has no working day within {MAX_SCAN_DAYS} days {direction} {origin}")
