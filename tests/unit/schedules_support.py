"""Helpers shared by the schedule tests: UTC datetimes, chains of firings, a zone's transitions."""

from __future__ import annotations

import bisect
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from celeriac.schedules import BaseSchedule


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    """An aware UTC datetime."""
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def chain(
    schedule: BaseSchedule, start: datetime, until: datetime, tz: str | None = None
) -> list[datetime]:
    """Every firing after ``start`` up to ``until``, each answer fed back as the next question,
    as a scheduler does."""
    out: list[datetime] = []
    moment = schedule.next_after(start, tz)
    while moment.astimezone(UTC) <= until.astimezone(UTC):
        out.append(moment)
        moment = schedule.next_after(moment, tz)
    return out


def firings(
    schedule: BaseSchedule, start: datetime, count: int, tz: str | None = None
) -> list[str]:
    """The next ``count`` firings after ``start``, chained, as ISO text in the schedule's zone."""
    out = []
    for _ in range(count):
        start = schedule.next_after(start, tz)
        assert start.tzinfo is UTC
        out.append(start.astimezone(schedule.zone(tz)).isoformat())
    return out


def shown(moments: list[datetime], zone: str) -> list[str]:
    """``moments`` as ISO text in ``zone``."""
    return [moment.astimezone(ZoneInfo(zone)).isoformat() for moment in moments]


class Transitions:
    """The instants at which a zone's UTC offset changes between two years, found by scanning
    every six hours and bisecting to the second (independently of the code under test)."""

    def __init__(self, zone: tzinfo, first_year: int, last_year: int) -> None:
        self.instants: list[datetime] = []
        moment, end = utc(first_year, 1, 1), utc(last_year + 1, 1, 1)
        offset = moment.astimezone(zone).utcoffset()
        while moment < end:
            later = moment + timedelta(hours=6)
            later_offset = later.astimezone(zone).utcoffset()
            if later_offset != offset:
                low, high = int(moment.timestamp()), int(later.timestamp())
                while high - low > 1:
                    middle = (low + high) // 2
                    if datetime.fromtimestamp(middle, zone).utcoffset() == offset:
                        low = middle
                    else:
                        high = middle
                self.instants.append(datetime.fromtimestamp(high, UTC))
                offset = later_offset
            moment = later

    def near(self, moment: datetime, margin: timedelta = timedelta(days=2)) -> bool:
        """Whether a transition lies within ``margin`` of ``moment``."""
        index = bisect.bisect_left(self.instants, moment.astimezone(UTC) - margin)
        return index < len(self.instants) and self.instants[index] <= moment + margin
