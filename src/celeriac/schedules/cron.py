"""``crontab(...)``: Celery's five-field crontab, and its next firing in a time zone.

Celery's meaning throughout: ``crontab()`` with no arguments fires every minute; a day must match
``day_of_month`` AND ``day_of_week`` AND ``month_of_year`` (not cron's "either day field" rule:
``day_of_week="mon", day_of_month="1-7"`` is the first Monday of the month); Sunday is 0. A
combination of ``day_of_month`` and ``month_of_year`` that never occurs (the 30th of February) is
refused when declared; the 29th of February is allowed and fires in leap years.

The next firing is searched in wall-clock time in the zone, matching days first and then hours
and minutes in order, and each matching wall time becomes an instant by the daylight-saving rules
of :func:`celeriac.schedules.zones.resolve_wall`. Those instants never go backwards as wall time
goes forwards, so the first one after ``dt`` is the answer.
"""

from __future__ import annotations

import calendar
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, date, datetime, tzinfo
from typing import Any

from celeriac.schedules.base import BaseSchedule
from celeriac.schedules.cronspec import FIELDS, Cronspec, parse_field, spec_text
from celeriac.schedules.errors import ScheduleError
from celeriac.schedules.zones import ZoneLike, resolve_wall

__all__ = ["crontab"]

#: The most days each month can have (February's in a leap year), to refuse impossible dates.
_LONGEST_MONTH = dict(enumerate((31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31), start=1))


class crontab(BaseSchedule):
    """Fire at the minutes, hours, days and months given, in Celery's crontab syntax."""

    kind = "crontab"

    def __init__(
        self,
        minute: Cronspec | None = "*",
        hour: Cronspec | None = "*",
        day_of_week: Cronspec | None = "*",
        day_of_month: Cronspec | None = "*",
        month_of_year: Cronspec | None = "*",
        tz: ZoneLike | None = None,
        nowfun: Callable[[], datetime] | None = None,
        app: Any = None,
    ) -> None:
        # Celery's names: the expanded sets, and the fields as written (django-celery-beat reads
        # the _orig_ ones).
        self.minute = parse_field(FIELDS["minute"], minute)
        self.hour = parse_field(FIELDS["hour"], hour)
        self.day_of_week = parse_field(FIELDS["day_of_week"], day_of_week)
        self.day_of_month = parse_field(FIELDS["day_of_month"], day_of_month)
        self.month_of_year = parse_field(FIELDS["month_of_year"], month_of_year)
        self._orig_minute = spec_text(minute)
        self._orig_hour = spec_text(hour)
        self._orig_day_of_week = spec_text(day_of_week)
        self._orig_day_of_month = spec_text(day_of_month)
        self._orig_month_of_year = spec_text(month_of_year)
        if not any(
            day <= _LONGEST_MONTH[month]
            for month in self.month_of_year
            for day in self.day_of_month
        ):
            raise ScheduleError(
                f"crontab day_of_month: {self._orig_day_of_month} never occurs in "
                f"month_of_year {self._orig_month_of_year}"
            )
        self._minutes = tuple(sorted(self.minute))
        self._hours = tuple(sorted(self.hour))
        self._days = tuple(sorted(self.day_of_month))
        super().__init__(tz=tz, nowfun=nowfun, app=app)

    @classmethod
    def from_string(cls, expression: str, tz: ZoneLike | None = None) -> crontab:
        """A crontab from cron's one-line form, ``"minute hour day_of_month month day_of_week"``
        (cron's order, not the keyword order): ``crontab.from_string("*/15 9-17 * * mon-fri")``.
        """
        fields = expression.split() if isinstance(expression, str) else []
        if len(fields) != 5:
            raise ScheduleError(
                f"crontab: {expression!r} needs five fields: "
                "minute hour day_of_month month_of_year day_of_week"
            )
        minute, hour, day_of_month, month_of_year, day_of_week = fields
        return cls(minute, hour, day_of_week, day_of_month, month_of_year, tz=tz)

    # -- next firing ----------------------------------------------------------------------------

    def _next(self, dt: datetime, zone: tzinfo) -> datetime:
        wall = dt.astimezone(zone).replace(tzinfo=None)
        for candidate in self._walls_after(wall):
            instant = resolve_wall(candidate, zone)
            # A wall time after dt's can still be an earlier instant: dt in the second pass of a
            # repeated hour, whose wall times fire at their first pass (already gone).
            if instant.astimezone(UTC) > dt:
                return instant
        raise AssertionError("unreachable: _walls_after never ends")  # pragma: no cover

    def _walls_after(self, wall: datetime) -> Iterator[datetime]:
        """Every matching wall time (whole minutes) strictly after ``wall``, in order."""
        today = wall.date()
        for day in self._days_from(today):
            hours: tuple[int, ...] = self._hours
            if day == today:
                hours = hours[bisect_right(hours, wall.hour - 1) :]
            for hour in hours:
                minutes: tuple[int, ...] = self._minutes
                if day == today and hour == wall.hour:
                    minutes = minutes[bisect_right(minutes, wall.minute) :]
                for minute in minutes:
                    yield datetime(day.year, day.month, day.day, hour, minute)

    def _days_from(self, start: date) -> Iterator[date]:
        """Every day from ``start`` on that matches the three day fields, in order.

        Ends only with the calendar: a day-of-month and month that can occur (checked when
        declared) falls on every weekday within a 400-year cycle.
        """
        year, month, first = start.year, start.month, start.day
        while True:
            if month in self.month_of_year:
                last = calendar.monthrange(year, month)[1]
                for day in self._days[bisect_right(self._days, first - 1) :]:
                    if day > last:
                        break
                    found = date(year, month, day)
                    if found.isoweekday() % 7 in self.day_of_week:
                        yield found
            first = 1
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)

    # -- description ----------------------------------------------------------------------------

    def _fields(self) -> dict[str, str]:
        return {
            "minute": self._orig_minute,
            "hour": self._orig_hour,
            "day_of_week": self._orig_day_of_week,
            "day_of_month": self._orig_day_of_month,
            "month_of_year": self._orig_month_of_year,
        }

    def _key(self) -> tuple[Any, ...]:
        return (
            self._minutes,
            self._hours,
            tuple(sorted(self.day_of_week)),
            self._days,
            tuple(sorted(self.month_of_year)),
            self._tz_name(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, **self._fields(), "tz": self._tz_name()}

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any]) -> crontab:
        return cls(
            minute=data["minute"],
            hour=data["hour"],
            day_of_week=data["day_of_week"],
            day_of_month=data["day_of_month"],
            month_of_year=data["month_of_year"],
            tz=data.get("tz"),
        )

    def __repr__(self) -> str:
        zone = f" tz={self._tz_name()}" if self.tz is not None else ""
        return (
            f"<crontab: {self._orig_minute} {self._orig_hour} {self._orig_day_of_month} "
            f"{self._orig_month_of_year} {self._orig_day_of_week} (m/h/dM/MY/d){zone}>"
        )
