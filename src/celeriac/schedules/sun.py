"""Where the sun is, and when it crosses an altitude: NOAA's solar equations, no ephemeris library.

The equations are NOAA's solar calculator's (Meeus's low-precision theory): the sun's declination
and the equation of time from the Julian century, good to a few seconds of time for the years
1800-2100. An event is then found the way an almanac defines it: solar noon is the transit (the
sun on the observer's meridian, hour angle 0); a rising is the crossing of the event's altitude
upwards, a setting downwards, each looked for in the two halves of a solar day (anti-transit to
transit, transit to anti-transit: hour angle 180 to 0 to 180). Each crossing is bisected to a
fraction of a second on the true altitude curve, so the declination's drift within the day is
included and polar days and nights need no special case: a day with no crossing has no event.

Altitudes are of the sun's centre without atmospheric refraction, as Celery's ``ephem`` set-up
computes them (pressure 0): -0.8333 degrees for sunrise and sunset (the upper limb 34 arc-minutes
below the horizon), -6, -12 and -18 for civil, nautical and astronomical twilight.
"""

from __future__ import annotations

import math

__all__ = ["altitude", "event_after"]

_DAY = 86400.0
_J2000 = 2451545.0
_UNIX_EPOCH_JD = 2440587.5


def _sun(ts: float) -> tuple[float, float]:
    """The sun's declination (radians) and the equation of time (minutes) at Unix time ``ts``."""
    t = (ts / _DAY + _UNIX_EPOCH_JD - _J2000) / 36525.0
    mean_long = math.radians((280.46646 + t * (36000.76983 + t * 0.0003032)) % 360.0)
    anomaly = math.radians(357.52911 + t * (35999.05029 - 0.0001537 * t))
    eccentricity = 0.016708634 - t * (0.000042037 + 0.0000001267 * t)
    centre = (
        math.sin(anomaly) * (1.914602 - t * (0.004817 + 0.000014 * t))
        + math.sin(2 * anomaly) * (0.019993 - 0.000101 * t)
        + math.sin(3 * anomaly) * 0.000289
    )
    omega = math.radians(125.04 - 1934.136 * t)
    apparent = math.radians(math.degrees(mean_long) + centre - 0.00569 - 0.00478 * math.sin(omega))
    seconds = 21.448 - t * (46.815 + t * (0.00059 - t * 0.001813))
    obliquity = math.radians(23.0 + (26.0 + seconds / 60.0) / 60.0 + 0.00256 * math.cos(omega))
    declination = math.asin(math.sin(obliquity) * math.sin(apparent))
    y = math.tan(obliquity / 2) ** 2
    equation = (
        y * math.sin(2 * mean_long)
        - 2 * eccentricity * math.sin(anomaly)
        + 4 * eccentricity * y * math.sin(anomaly) * math.cos(2 * mean_long)
        - 0.5 * y * y * math.sin(4 * mean_long)
        - 1.25 * eccentricity * eccentricity * math.sin(2 * anomaly)
    )
    return declination, 4.0 * math.degrees(equation)


def _hour_angle(ts: float, lon: float, equation: float) -> float:
    """The sun's hour angle in degrees, in [-180, 180): 0 on the meridian, negative before."""
    solar_minutes = (ts % _DAY) / 60.0 + equation + 4.0 * lon
    return (solar_minutes / 4.0) % 360.0 - 180.0


def altitude(ts: float, lat: float, lon: float) -> float:
    """The altitude of the sun's centre in degrees, at Unix time ``ts``, seen from lat/lon."""
    declination, equation = _sun(ts)
    angle = math.radians(_hour_angle(ts, lon, equation))
    phi = math.radians(lat)
    sine = math.sin(phi) * math.sin(declination) + math.cos(phi) * math.cos(declination) * math.cos(
        angle
    )
    return math.degrees(math.asin(max(-1.0, min(1.0, sine))))


def _meridian(estimate: float, lon: float, target: float) -> float:
    """The instant near ``estimate`` when the hour angle is ``target`` (0: transit, 180: anti)."""
    ts = estimate
    for _ in range(4):
        angle = _hour_angle(ts, lon, _sun(ts)[1]) - target
        angle = (angle + 180.0) % 360.0 - 180.0
        ts -= angle / 360.0 * _DAY
    return ts


def _crossing(
    start: float, end: float, lat: float, lon: float, target: float, upwards: bool
) -> float | None:
    """The instant in [start, end] where the altitude crosses ``target`` upwards (or downwards),
    if its ends are on either side of it that way."""
    low, high = altitude(start, lat, lon) - target, altitude(end, lat, lon) - target
    if (low < 0 <= high) if upwards else (high < 0 <= low):
        while end - start > 0.25:
            middle = (start + end) / 2
            if (altitude(middle, lat, lon) < target) == upwards:
                start = middle
            else:
                end = middle
        return (start + end) / 2
    return None


def _events_on(day: int, kind: str, target: float, lat: float, lon: float) -> list[float]:
    """The events of solar day ``day`` (days since 1970-01-01), from the anti-transit before its
    transit (near that day's noon) to the next one, in order.

    A rising is looked for in both halves of the day, not only before the transit: near a pole
    the sun's daily circle is so flat that the slow change of its declination decides when the
    sun crosses an altitude, which may then be either side of the transit.
    """
    transit = _meridian(day * _DAY + _DAY / 2 - lon * 240.0, lon, 0.0)
    if kind == "transit":
        return [transit]
    before = _meridian(transit - _DAY / 2, lon, 180.0)
    after = _meridian(transit + _DAY / 2, lon, 180.0)
    upwards = kind == "rising"
    found = (
        _crossing(before, transit, lat, lon, target, upwards),
        _crossing(transit, after, lat, lon, target, upwards),
    )
    return [moment for moment in found if moment is not None]


def event_after(ts: float, kind: str, target: float, lat: float, lon: float) -> int:
    """The first event strictly after Unix time ``ts``, in whole seconds.

    ``kind`` is ``"rising"``, ``"setting"`` or ``"transit"``; ``target`` the altitude in degrees.
    Events are rounded to the second, so the same event is the same instant whichever day the
    search began on, and the event after an event is the next day's. Every altitude an event
    uses (-18 to -0.8333 degrees, or the transit) is crossed at least once a year at any
    latitude, so the search ends within two years.
    """
    day = math.floor((ts + lon * 240.0) / _DAY) - 1
    for offset in range(740):
        for found in _events_on(day + offset, kind, target, lat, lon):
            if round(found) > ts:
                return round(found)
    raise RuntimeError(f"no {kind} at altitude {target} for lat {lat} lon {lon} within two years")
