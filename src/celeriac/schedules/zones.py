"""Time zones for schedules: naming a zone, and turning a local wall-clock time into an instant.

A crontab is written in wall-clock time ("09:00 every day"), but a scheduler fires at instants.
Most wall-clock times name exactly one instant; on a daylight-saving day some name none (the
spring-forward gap) and some name two (the fall-back fold). :func:`resolve_wall` is the one place
that decides what such a time means, so every schedule follows the same rules (written out in
:mod:`celeriac.schedules`): a time in a gap is the first instant after the gap, a time in a fold is
its first occurrence.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celeriac.schedules.errors import ScheduleError

__all__ = ["ZoneLike", "floor_wall", "require_aware", "resolve_wall", "to_zone", "zone_name"]

#: What a schedule accepts as its own zone: an IANA name or a ZoneInfo (``datetime.UTC`` too).
ZoneLike = str | tzinfo


def to_zone(value: ZoneLike, what: str) -> ZoneInfo:
    """The ZoneInfo that ``value`` names; ``what`` names the setting in the error.

    Only named zones are accepted (not fixed offsets or pytz objects): a schedule's zone is stored
    with the entry, and a name is what survives a round trip and follows the zone's future rules.
    """
    if isinstance(value, ZoneInfo):
        return value
    if value is UTC:
        return ZoneInfo("UTC")
    if isinstance(value, str) and value.strip().upper() == "UTC":
        return ZoneInfo("UTC")
    if isinstance(value, str) and value.strip():
        try:
            return ZoneInfo(value.strip())
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ScheduleError(f"{what}: {value!r} is not a known time zone") from exc
    raise ScheduleError(
        f"{what}: {value!r} is not a time zone: give an IANA name such as 'Europe/London' "
        "or a zoneinfo.ZoneInfo"
    )


def zone_name(zone: tzinfo | None) -> str | None:
    """The name stored for ``zone`` (its IANA key), or None for no zone of its own."""
    if zone is None:
        return None
    key = getattr(zone, "key", None)
    return key if isinstance(key, str) else str(zone)


def require_aware(dt: datetime, what: str) -> None:
    """Refuse a naive datetime: its instant depends on a zone the caller did not say."""
    if not isinstance(dt, datetime):
        raise TypeError(f"{what} needs a datetime, got {type(dt).__name__}")
    if dt.tzinfo is None or dt.tzinfo.utcoffset(dt) is None:
        raise ValueError(
            f"{what} needs an aware datetime (with a tzinfo), got naive {dt.isoformat()}: "
            "attach the zone it is in, e.g. dt.replace(tzinfo=ZoneInfo('UTC'))"
        )


def resolve_wall(wall: datetime, zone: tzinfo) -> datetime:
    """The instant at which the naive wall-clock time ``wall`` in ``zone`` fires.

    A time that exists once is that instant. A time that occurs twice (fall back) is its first
    occurrence: ``fold=0`` is the earlier one (PEP 495). A time that does not exist (spring
    forward) is the first instant after the gap, the transition itself. The result is aware, in
    ``zone``, and never decreases as ``wall`` increases, which is what lets a schedule search
    wall times in order and stop at the first whose instant is late enough.
    """
    first = wall.replace(tzinfo=zone, fold=0)
    back = first.astimezone(UTC).astimezone(zone)
    if back.replace(tzinfo=None) == wall:
        return back
    return _gap_end(wall, zone)


def _gap_end(wall: datetime, zone: tzinfo) -> datetime:
    """The transition instant that ends the gap ``wall`` falls in (its first existing instant).

    With ``fold=1`` a gap time reads with the offset after the transition, which gives an instant
    before it; with ``fold=0``, the offset before, which gives one at or after it. The transition
    lies between the two; zone transitions fall on whole seconds, so a bisection over seconds
    finds the first instant whose wall time is past ``wall``.
    """
    before = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    after = int(wall.replace(tzinfo=zone, fold=0).timestamp())
    while after - before > 1:
        middle = (before + after) // 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) > wall:
            after = middle
        else:
            before = middle
    return datetime.fromtimestamp(after, zone)


def floor_wall(wall: datetime, unit: timedelta) -> datetime:
    """``wall`` cut down to a whole day, hour or minute (the resolution of ``unit``)."""
    if unit >= timedelta(days=1):
        return wall.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit >= timedelta(hours=1):
        return wall.replace(minute=0, second=0, microsecond=0)
    if unit >= timedelta(minutes=1):
        return wall.replace(second=0, microsecond=0)
    return wall
