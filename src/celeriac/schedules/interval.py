"""``schedule(run_every)``: Celery's interval, in absolute time.

``next_after(dt)`` is ``dt + run_every`` measured in elapsed time, whatever the clocks do: an
hourly interval is 3600 s apart across a daylight-saving change. ``dt`` is the previous firing, so
the scheduler decides where the series starts (its last slot) and the interval only steps it.

``relative=True`` (Celery's) rounds each run down to the interval's resolution as the clock in the
zone shows it, so that an hourly interval fires on the hour and a daily one at midnight: the run
is ``dt + run_every`` cut to the whole day, hour or minute, or the next such boundary if the cut
falls at or before ``dt``. Intervals under a minute are not rounded. An hour shown twice (fall
back) is two boundaries, so a relative hourly interval stays 3600 s apart through it; a midnight
shown twice is one (its first), so a daily one fires once a day; a boundary that does not exist
(spring forward) is the first instant after the gap, as in :mod:`celeriac.schedules`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from celeriac.schedules.base import BaseSchedule
from celeriac.schedules.errors import ScheduleError
from celeriac.schedules.zones import ZoneLike, floor_wall, resolve_wall

__all__ = ["humanize_seconds", "schedule"]

_DAY = timedelta(days=1)
_UNITS = (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0), ("second", 1.0))


def humanize_seconds(seconds: float) -> str:
    """Celery's wording of a duration: ``"30.00 seconds"``, ``"1.00 hour"``, ``"now"``."""
    seconds = float(format(float(seconds), ".2f"))
    for unit, size in _UNITS:
        if seconds >= size:
            amount = seconds / size
            return f"{amount:.2f} {unit}{'' if amount == 1 else 's'}"
    return "now"


def _as_timedelta(run_every: float | timedelta | None) -> timedelta:
    if isinstance(run_every, timedelta):
        every = run_every
    elif isinstance(run_every, int | float) and not isinstance(run_every, bool):
        if not math.isfinite(run_every):
            raise ScheduleError(f"schedule run_every: {run_every!r} is not a finite number")
        every = timedelta(seconds=run_every)
    else:
        raise ScheduleError(
            f"schedule run_every: {run_every!r} is not a number of seconds or a timedelta"
        )
    if every <= timedelta(0):
        raise ScheduleError(f"schedule run_every: {run_every!r} must be more than 0 seconds")
    return every


class schedule(BaseSchedule):
    """Run every ``run_every`` (seconds, or a timedelta), in elapsed time."""

    kind = "interval"

    def __init__(
        self,
        run_every: float | timedelta | None = None,
        relative: bool = False,
        nowfun: Callable[[], datetime] | None = None,
        app: Any = None,
        tz: ZoneLike | None = None,
    ) -> None:
        self.run_every = _as_timedelta(run_every)
        self.relative = bool(relative)
        super().__init__(tz=tz, nowfun=nowfun, app=app)

    @property
    def seconds(self) -> float:
        """The interval in seconds (Celery's attribute)."""
        return self.run_every.total_seconds()

    @property
    def human_seconds(self) -> str:
        """The interval in words (Celery's attribute)."""
        return humanize_seconds(self.seconds)

    def _next(self, dt: datetime, zone: tzinfo) -> datetime:
        # Add in UTC: adding to an aware datetime adds to its wall clock, not to elapsed time.
        target = (dt + self.run_every).astimezone(zone)
        unit = _resolution(self.run_every)
        if not self.relative or unit is None:
            return target
        # Celery's rule: the last boundary at or before the target, unless that is not after dt;
        # then the first boundary after dt. A boundary is the target's clock cut to the unit.
        wall = floor_wall(target.replace(tzinfo=None), unit)
        cut = [moment for moment in _boundaries(wall, unit, zone) if moment <= target]
        if cut and cut[-1] > dt:
            return cut[-1].astimezone(zone)
        while True:
            for moment in _boundaries(wall, unit, zone):
                if moment > dt:
                    return moment.astimezone(zone)
            wall += unit

    def _key(self) -> tuple[Any, ...]:
        return (self.run_every, self.relative, self._tz_name())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, timedelta):  # Celery compares an interval to a timedelta too
            return not self.relative and self.tz is None and self.run_every == other
        return super().__eq__(other)

    def __hash__(self) -> int:
        if not self.relative and self.tz is None:
            return hash(self.run_every)  # equal to its timedelta, so hashed like it
        return super().__hash__()

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "every": self.seconds,
            "relative": self.relative,
            "tz": self._tz_name(),
        }

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any]) -> schedule:
        every = data["every"]
        if isinstance(every, bool) or not isinstance(every, int | float):
            raise ScheduleError(f"interval schedule every: {every!r} is not a number of seconds")
        return cls(timedelta(seconds=every), relative=bool(data.get("relative")), tz=data.get("tz"))

    def __repr__(self) -> str:
        extra = " relative" if self.relative else ""
        zone = f" tz={self._tz_name()}" if self.tz is not None else ""
        return f"<freq: {self.human_seconds}{extra}{zone}>"


def _boundaries(wall: datetime, unit: timedelta, zone: tzinfo) -> list[datetime]:
    """The instants (in UTC, in order) of the boundary ``wall``.

    Two for an hour or minute shown twice (both are whole hours, 3600 s apart in the repeated
    hour); a midnight shown twice is its first occurrence only, so a daily run stays once a day;
    a boundary in a gap is the first instant after the gap.
    """
    found: list[datetime] = []
    for fold in (0,) if unit >= _DAY else (0, 1):
        moment = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if moment.astimezone(zone).replace(tzinfo=None) == wall and moment not in found:
            found.append(moment)
    return sorted(found) or [resolve_wall(wall, zone).astimezone(UTC)]


def _resolution(every: timedelta) -> timedelta | None:
    """The unit ``relative`` rounds to: a day, an hour or a minute; None under a minute."""
    for unit in (timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)):
        if every >= unit:
            return unit
    return None
