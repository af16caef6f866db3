"""Ages of referrals in working time, as the dashboard shows and counts them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time, timedelta

from activities.calendar import WorkingCalendar
from models.policy import Duration


class WorkingAge:
    """Working time from instants up to one fixed `now`, in the policy's calendar.

    Working time adds up over any split point, so the time from a referral's arrival to now is
    the part of its own day plus the rest from the next local midnight, which is shared by every
    referral received that day: a long export computes each day's share once.
    """

    def __init__(self, calendar: WorkingCalendar, now: datetime) -> None:
        self.calendar = calendar
        self.now = now
        self.day_seconds = calendar.working_day_seconds
        self._from_midnight: dict[datetime, float] = {}

    def seconds_since(self, start: datetime) -> float:
        """Working seconds from `start` to now (0 when `start` is not in the past)."""
        local = start.astimezone(self.calendar.zone)
        midnight = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=self.calendar.zone)
        if midnight >= self.now:
            return self.calendar.working_seconds_between(start, self.now)
        rest = self._from_midnight.get(midnight)
        if rest is None:
            rest = self._from_midnight[midnight] = self.calendar.working_seconds_between(midnight, self.now)
        if local.utcoffset() != midnight.utcoffset():
            # The clocks change later that day: the wall clock no longer measures working time.
            return self.calendar.working_seconds_between(start, midnight) + rest
        return self._rest_of_day(local) + rest

    def _rest_of_day(self, local: datetime) -> float:
        """Working seconds from a local instant to the end of its day, on a day without a clock change."""
        if not self.calendar.is_working_day(local.date()):
            return 0.0
        opens, closes = (_seconds(t) for t in self.calendar.policy.working_hours)
        return max(0.0, closes - max(_seconds(local.time()), opens))

    def describe(self, seconds: float) -> str:
        """Like "2 working days 3 h", "5 h" or "40 min"."""
        days = int(seconds // self.day_seconds)
        rest = seconds - days * self.day_seconds
        hours = int(rest // 3600)
        if days:
            text = f"{days} working day{'' if days == 1 else 's'}"
            return f"{text} {hours} h" if hours else text
        if hours:
            return f"{hours} h"
        return f"{int(rest // 60)} min"

    def since(self, start: datetime) -> str:
        """`describe(seconds_since(start))`."""
        return self.describe(self.seconds_since(start))

    def days_ago(self, days: Sequence[int]) -> list[datetime]:
        """For each n, the instant n working days before now: older arrivals are at least n days old."""
        return [self.calendar.subtract(self.now, Duration(working=True, days=n)) for n in days]


def _seconds(t: time) -> float:
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1_000_000
