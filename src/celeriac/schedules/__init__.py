"""Schedules of periodic tasks, as Celery declares them: ``schedule``, ``crontab``, ``solar``.

``from celery.schedules import crontab, schedule, solar`` becomes ``from celeriac.schedules
import crontab, schedule, solar`` with the same arguments. Every schedule is a pure function of
time, and the one place beat gets its times from is::

    schedule.next_after(dt, default_tz=None) -> datetime

the first instant the schedule fires at strictly after the aware datetime ``dt`` (a naive one is
refused). Wall-clock fields (a crontab's hours and minutes, a relative interval's rounding) are
read in a zone chosen explicitly, in this order: the schedule's own ``tz`` (``crontab(...,
tz="Europe/London")``, or ``s.with_tz(zone)``), else the ``default_tz`` the caller passes (beat
passes the app's ``timezone`` setting), else UTC. The result is aware and in UTC, so that
results compare and subtract as instants (``.astimezone(zone)`` shows one in local time).

Daylight saving, defined here once (in :func:`celeriac.schedules.zones.resolve_wall`) and
tested over whole years in several zones:

- **A wall-clock time that does not exist that day** (it falls in a spring-forward gap: 02:30 in
  New York on the second Sunday of March) fires once, right after the gap: at the first instant
  that exists after it (03:00 EDT there). Several such times (every 15 minutes through the gap)
  are that one instant, so they fire once, together with a time the entry also has at the end of
  the gap.
- **A wall-clock time that occurs twice** (it falls in a fall-back fold: 01:30 in New York on the
  first Sunday of November) fires once, at its first occurrence (01:30 EDT). The second pass of
  the repeated hour fires nothing, so an every-15-minutes entry is quiet for that second hour.
- **A daily entry fires exactly once on every local day**, never zero, never twice, whatever its
  time: this follows from the two rules above, wherever the zone puts its transitions (at 02:00,
  at midnight as Sao Paulo did, by 30 minutes as Lord Howe Island does). The exceptions are days
  the clocks skip into: a day that does not exist at all (Samoa skipped 30 December 2011), or a
  gap that runs past midnight; a firing in such a gap moves to the first instant after it, on
  the next day.
- **Intervals are absolute time**: ``schedule(3600)`` fires 3600 s after the last run whatever
  the clocks do; ``next_after(dt)`` is ``dt + run_every`` in elapsed time. With Celery's
  ``relative=True`` the run is cut to the clock's whole hour (or day, minute): both passes of a
  repeated hour are whole hours; a day is a local midnight, by the rules above.
- **Solar events are instants** and need no zone.

Each schedule also has a stable, hashable description for a store: ``to_dict()`` (JSON-able,
with a ``"type"``) and ``BaseSchedule.from_dict()`` / :func:`from_dict` round-trip it, ``==`` and
``hash`` compare what the schedule fires on (and its zone), ``repr`` is Celery's. Celery's
``remaining_estimate(last_run_at)`` and ``is_due(last_run_at)`` work too, on ``next_after``.

Deliberate differences from Celery, each a mistake that now fails when declared: a bad crontab
raises :class:`ScheduleError` (an ``ImproperlyConfigured`` and a ``ValueError``) naming the field
and the value, e.g. ``crontab minute: 61 is out of range 0-59``; a day name counts only in
``day_of_week`` and a month name only in ``month_of_year``; an interval must be more than 0
seconds; ``solar`` needs no ``ephem``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from celeriac.schedules.base import BaseSchedule, schedstate
from celeriac.schedules.cron import crontab
from celeriac.schedules.cronspec import FIELDS, CronField, Cronspec, parse_field
from celeriac.schedules.errors import ScheduleError
from celeriac.schedules.interval import humanize_seconds, schedule
from celeriac.schedules.sunevents import EVENTS, solar

__all__ = [
    "EVENTS",
    "BaseSchedule",
    "Cronspec",
    "ParseException",
    "ScheduleError",
    "crontab",
    "crontab_parser",
    "from_dict",
    "humanize_seconds",
    "maybe_schedule",
    "schedstate",
    "schedule",
    "solar",
]

#: Celery's name for a crontab that cannot be parsed; here the one schedule error.
ParseException = ScheduleError


def from_dict(data: Mapping[str, Any]) -> BaseSchedule:
    """The schedule a ``to_dict()`` form describes (see :meth:`BaseSchedule.from_dict`)."""
    return BaseSchedule.from_dict(data)


def maybe_schedule(
    value: float | timedelta | BaseSchedule | None, relative: bool = False, app: Any = None
) -> BaseSchedule | None:
    """Celery's: a number of seconds or a timedelta as an interval; a schedule as it is (given
    ``app``, if one is passed); None stays None. Anything else fails naming the value."""
    if value is None:
        return None
    if isinstance(value, BaseSchedule):
        if app is not None:
            value.app = app
        return value
    if isinstance(value, timedelta | int | float) and not isinstance(value, bool):
        return schedule(value, relative, app=app)
    raise ScheduleError(
        f"schedule: {value!r} is not a number of seconds, a timedelta or a schedule "
        "(crontab, solar, schedule)"
    )


class crontab_parser:
    """Celery's parser of one crontab field over ``min_`` to ``min_ + max_ - 1``.

    ``crontab_parser(60).parse("*/15")`` is ``{0, 15, 30, 45}``. Day names are read for the
    0-6 range, month names for 1-12; the rest of the grammar is :mod:`.cronspec`'s.
    """

    ParseException = ScheduleError

    def __init__(self, max_: int = 60, min_: int = 0) -> None:
        names: tuple[str, ...] = ()
        for known in FIELDS.values():
            if (known.low, known.high) == (min_, min_ + max_ - 1) and known.names:
                names = known.names
        self._field = CronField("field", min_, min_ + max_ - 1, names)

    def parse(self, spec: str) -> set[int]:
        """The values ``spec`` selects."""
        return set(parse_field(self._field, spec))
