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
_US_PER_DAY = 86_400_000_000
_ONE_DAY = timedelta(days=1)


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
        """True when local wall time is within working hours (ends included) on a working day."""
        _require_aware(dt)
        local = dt.astimezone(self.zone)
        return self._start <= _us(local.time()) <= self._end and self.is_working_day(local.date())

    def next_working_instant(self, dt: datetime) -> datetime:
        """`dt` if it is working time, else the start of the next working day (UTC)."""
        d, t = self._snap_forward(dt)
        return self._instant(d, t)

    def previous_working_instant(self, dt: datetime) -> datetime:
        """`dt` if it is working time, else the end of the previous working day (UTC)."""
        d, t = self._snap_back(dt)
        return self._instant(d, t)

    def add(self, start: datetime, duration: Duration) -> datetime:
        """The instant `duration` after `start`; working time skips nights, weekends, holidays."""
        _require_aware(start)
        if not duration.working:
            # In UTC: aware arithmetic in a local zone is wall-clock, wrong by an hour across DST.
            return start.astimezone(UTC) + duration.as_timedelta()
        remaining = self._duration_us(duration)
        d, t = self._snap_forward(start)
        for _ in range(self._max_days(remaining)):
            available = self._end - t
            if remaining <= available:
                return self._instant(d, t + remaining)
            remaining -= available
            d, t = self._next_working_day(d), self._start
        raise AssertionError("unreachable: each working day consumes working time")  # pragma: no cover

    def subtract(self, end: datetime, duration: Duration) -> datetime:
        """The instant `duration` before `end`, counting working time backwards for working durations."""
        _require_aware(end)
        if not duration.working:
            return end.astimezone(UTC) - duration.as_timedelta()
        remaining = self._duration_us(duration)
        d, t = self._snap_back(end)
        for _ in range(self._max_days(remaining)):
            available = t - self._start
            if remaining <= available:
                return self._instant(d, t - remaining)
            remaining -= available
            d, t = self._previous_working_day(d), self._end
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
        first, last = a.astimezone(self.zone), b.astimezone(self.zone)
        total = 0
        d = first.date()
        # One step per calendar day in the span: the span is the caller's, not a policy's.
        while d <= last.date():
            if self.is_working_day(d):
                lo = max(self._start, _us(first.time()) if d == first.date() else 0)
                hi = min(self._end, _us(last.time()) if d == last.date() else _US_PER_DAY)
                total += max(0, hi - lo)
            d += _ONE_DAY
        return total / 1_000_000

    def _duration_us(self, duration: Duration) -> int:
        if not duration.working:
            raise ValueError(f"{duration} is elapsed time, not working time")
        if duration.days:
            return round(duration.days * (self._end - self._start))
        return duration.seconds * 1_000_000

    def _max_days(self, remaining: int) -> int:
        # After the first (partial) day every working day consumes a full day's working time.
        return remaining // (self._end - self._start) + 2

    def _instant(self, d: date, us: int) -> datetime:
        return datetime.combine(d, _time(us), tzinfo=self.zone).astimezone(UTC)

    def _snap_forward(self, dt: datetime) -> tuple[date, int]:
        _require_aware(dt)
        local = dt.astimezone(self.zone)
        d, t = local.date(), _us(local.time())
        if self.is_working_day(d) and t <= self._end:
            return d, max(t, self._start)
        return self._next_working_day(d), self._start

    def _snap_back(self, dt: datetime) -> tuple[date, int]:
        _require_aware(dt)
        local = dt.astimezone(self.zone)
        d, t = local.date(), _us(local.time())
        if self.is_working_day(d) and t >= self._start:
            return d, min(t, self._end)
        return self._previous_working_day(d), self._end

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
