"""``solar(event, lat, lon)``: fire at a solar event (sunrise, dusk...) seen from a place.

Celery's events and meanings, computed by :mod:`celeriac.schedules.sun` (NOAA's equations, within
about a minute of an ephemeris) instead of the ``ephem`` library. A solar event is an instant, so
a solar schedule has no zone of its own: ``next_after`` only uses the zone to express its answer.
Where an event does not happen on a day (no sunrise in a polar night, no astronomical dusk in a
northern summer), that day has no firing and the next day that has one follows, as in Celery.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime, tzinfo
from typing import Any, Self

from celeriac.schedules.base import BaseSchedule
from celeriac.schedules.errors import ScheduleError
from celeriac.schedules.sun import event_after
from celeriac.schedules.zones import ZoneLike

__all__ = ["EVENTS", "solar"]

#: Each event: which crossing it is, and the altitude of the sun's centre in degrees.
EVENTS: dict[str, tuple[str, float]] = {
    "dawn_astronomical": ("rising", -18.0),
    "dawn_nautical": ("rising", -12.0),
    "dawn_civil": ("rising", -6.0),
    "sunrise": ("rising", -50.0 / 60.0),
    "solar_noon": ("transit", 0.0),
    "sunset": ("setting", -50.0 / 60.0),
    "dusk_civil": ("setting", -6.0),
    "dusk_nautical": ("setting", -12.0),
    "dusk_astronomical": ("setting", -18.0),
}


def _coordinate(name: str, value: object, limit: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScheduleError(f"solar {name}: {value!r} is not a number of degrees")
    if not -limit <= value <= limit:
        raise ScheduleError(f"solar {name}: {value} is out of range {-limit:g} to {limit:g}")
    return float(value)


class solar(BaseSchedule):
    """Fire at ``event`` (one of :data:`EVENTS`) as seen from latitude ``lat``, longitude
    ``lon`` (degrees, north and east positive)."""

    kind = "solar"

    def __init__(
        self,
        event: str,
        lat: float,
        lon: float,
        nowfun: Callable[[], datetime] | None = None,
        app: Any = None,
    ) -> None:
        if event not in EVENTS:
            raise ScheduleError(f"solar event: {event!r} is not one of {', '.join(sorted(EVENTS))}")
        self.event = event
        self.lat = _coordinate("lat", lat, 90.0)
        self.lon = _coordinate("lon", lon, 180.0)
        self._crossing, self._altitude = EVENTS[event]
        super().__init__(nowfun=nowfun, app=app)

    def _next(self, dt: datetime, zone: tzinfo) -> datetime:
        seconds = event_after(dt.timestamp(), self._crossing, self._altitude, self.lat, self.lon)
        return datetime.fromtimestamp(seconds, zone)

    def with_tz(self, tz: ZoneLike | None) -> Self:
        """The same schedule: a solar event is an instant, whatever the zone."""
        return self

    def _key(self) -> tuple[Any, ...]:
        return (self.event, self.lat, self.lon)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "event": self.event, "lat": self.lat, "lon": self.lon}

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any]) -> solar:
        return cls(data["event"], data["lat"], data["lon"])

    def __repr__(self) -> str:
        return f"<solar: {self.event} at latitude {self.lat:g}, longitude: {self.lon:g}>"
