"""solar: Celery's events computed with NOAA's equations, within a minute of ephem (set up as
Celery 5.7 sets it up: pressure 0, horizon -0:34 for the sun's upper limb at sunrise and sunset,
its centre at -6/-12/-18 degrees for twilight), including polar days and nights."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from schedules_support import utc

from celeriac.schedules import ScheduleError, from_dict, solar

PLACES = {
    "London": (51.5074, -0.1278),
    "Sydney": (-33.8688, 151.2093),
    "Quito": (-0.1807, -78.4678),
    "Kathmandu": (27.7172, 85.324),
    "Tromso": (69.6492, 18.9553),
    "Anchorage": (61.2181, -149.9003),
}
EVENTS = (
    "dawn_astronomical",
    "dawn_nautical",
    "dawn_civil",
    "sunrise",
    "solar_noon",
    "sunset",
    "dusk_civil",
    "dusk_nautical",
    "dusk_astronomical",
)

# (place, start day in 2024 at 00:00 UTC, each event's next time as ephem 4.2.1 gives it, UTC;
# "MM-DD" is in 2024). Tromso has no sunrise in June (midnight sun) nor in December (polar
# night); London has no astronomical night around midsummer.
EPHEM: list[tuple[str, str, str]] = [
    (
        "London",
        "03-20",
        "03-20T04:08:45 03-20T04:49:42 03-20T05:29:02 03-20T06:02:18 03-20T12:07:49 "
        "03-20T18:14:20 03-20T18:47:42 03-20T19:27:12 03-20T20:08:24",
    ),
    (
        "London",
        "06-21",
        "07-21T00:22:59 06-21T01:40:46 06-21T02:55:25 06-21T03:43:14 06-21T12:02:25 "
        "06-21T20:21:36 06-21T21:09:24 06-21T22:24:01 07-20T23:51:19",
    ),
    (
        "London",
        "12-21",
        "12-21T05:59:37 12-21T06:40:26 12-21T07:23:38 12-21T08:03:57 12-21T11:58:48 "
        "12-21T15:53:39 12-21T16:33:57 12-21T17:17:09 12-21T17:57:59",
    ),
    (
        "Sydney",
        "03-20",
        "03-20T18:35:44 03-20T19:05:07 03-20T19:34:11 03-20T19:59:06 03-20T02:02:35 "
        "03-20T08:06:18 03-20T08:31:11 03-20T09:00:13 03-20T09:29:35",
    ),
    (
        "Sydney",
        "06-21",
        "06-21T19:30:49 06-21T20:01:17 06-21T20:32:32 06-21T21:00:17 06-21T01:56:59 "
        "06-21T06:53:53 06-21T07:21:39 06-21T07:52:53 06-21T08:23:22",
    ),
    (
        "Sydney",
        "12-21",
        "12-21T16:56:56 12-21T17:36:17 12-21T18:12:11 12-21T18:41:19 12-21T01:53:14 "
        "12-21T09:05:39 12-21T09:34:48 12-21T10:10:42 12-21T10:50:02",
    ),
    (
        "Quito",
        "03-20",
        "03-20T10:09:12 03-20T10:33:12 03-20T10:57:12 03-20T11:17:51 03-20T17:21:06 "
        "03-20T23:24:21 03-20T23:45:01 03-20T00:09:19 03-20T00:33:18",
    ),
    (
        "Quito",
        "06-21",
        "06-21T09:57:23 06-21T10:23:43 06-21T10:49:56 06-21T11:12:29 06-21T17:15:50 "
        "06-21T23:19:11 06-21T23:41:44 06-21T00:07:44 06-21T00:34:04",
    ),
    (
        "Quito",
        "12-21",
        "12-21T09:53:03 12-21T10:19:25 12-21T10:45:39 12-21T11:08:11 12-21T17:12:16 "
        "12-21T23:16:21 12-21T23:38:52 12-21T00:04:36 12-21T00:30:58",
    ),
    (
        "Kathmandu",
        "03-20",
        "03-20T23:03:25 03-20T23:30:49 03-20T23:58:01 03-20T00:22:29 03-20T06:26:04 "
        "03-20T12:30:05 03-20T12:53:27 03-20T13:20:41 03-20T13:48:05",
    ),
    (
        "Kathmandu",
        "06-21",
        "06-21T21:50:53 06-21T22:25:01 06-21T22:57:12 06-21T23:23:53 06-21T06:20:34 "
        "06-21T13:17:29 06-21T13:44:09 06-21T14:16:21 06-21T14:50:28",
    ),
    (
        "Kathmandu",
        "12-21",
        "12-21T23:42:06 12-21T00:10:17 12-21T00:39:31 12-21T01:05:13 12-21T06:16:52 "
        "12-21T11:28:32 12-21T11:54:14 12-21T12:23:27 12-21T12:52:07",
    ),
    (
        "Tromso",
        "03-20",
        "03-20T00:41:49 03-20T02:24:55 03-20T03:41:32 03-20T04:41:43 03-20T10:51:30 "
        "03-20T17:03:28 03-20T18:04:08 03-20T19:21:51 03-20T21:09:18",
    ),
    (
        "Tromso",
        "06-21",
        "09-16T23:09:54 08-31T23:13:41 08-13T23:08:47 07-25T23:19:35 06-21T10:46:05 "
        "07-25T22:22:43 08-13T22:30:08 08-31T22:16:00 09-16T22:08:48",
    ),
    (
        "Tromso",
        "12-21",
        "12-21T05:28:35 12-21T06:46:58 12-21T08:31:31 2025-01-15T10:24:29 12-21T10:42:26 "
        "2025-01-15T11:23:32 12-21T12:53:21 12-21T14:37:54 12-21T15:56:18",
    ),
    (
        "Anchorage",
        "03-20",
        "03-20T13:25:35 03-20T14:23:04 03-20T15:15:14 03-20T15:58:24 03-20T22:06:47 "
        "03-20T04:14:03 03-20T04:57:21 03-20T05:49:39 03-20T06:47:14",
    ),
    (
        "Anchorage",
        "06-21",
        "08-25T10:33:36 08-05T10:11:43 07-05T10:21:14 06-21T12:20:28 06-21T22:01:36 "
        "06-21T07:42:32 07-05T09:47:37 08-05T10:00:09 08-25T09:30:25",
    ),
    (
        "Anchorage",
        "12-21",
        "12-21T16:18:34 12-21T17:12:18 12-21T18:12:12 12-21T19:14:33 12-21T21:58:05 "
        "12-21T00:41:08 12-21T01:43:29 12-21T02:43:23 12-21T03:37:07",
    ),
]


def ephem_time(token: str) -> datetime:
    text = token if token.count("-") == 2 else f"2024-{token}"
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("place", "day", "expected"), EPHEM)
def test_events_are_within_a_minute_of_ephem(place: str, day: str, expected: str) -> None:
    lat, lon = PLACES[place]
    start = ephem_time(f"{day}T00:00:00")
    for event, token in zip(EVENTS, expected.split(), strict=True):
        ours = solar(event, lat, lon).next_after(start)
        assert ours.tzinfo is UTC
        error = abs((ours - ephem_time(token)).total_seconds())
        assert error <= 60, (place, event, ours, token, error)


def test_the_event_after_an_event_is_the_next_days() -> None:
    sunrise = solar("sunrise", 51.5074, -0.1278)
    moments = [utc(2024, 3, 1)]
    for _ in range(60):
        moments.append(sunrise.next_after(moments[-1]))
    gaps = [later - earlier for earlier, later in itertools.pairwise(moments[1:])]
    # Sunrise moves by under 4 minutes a day in London in March and April.
    assert all(timedelta(hours=23, minutes=56) < gap < timedelta(hours=24) for gap in gaps)
    assert all(moment.microsecond == 0 for moment in moments[1:])
    first = moments[1]
    assert sunrise.next_after(first - timedelta(seconds=1)) == first


@pytest.mark.parametrize(
    ("lat", "event", "between"),
    [
        (90.0, "sunrise", (utc(2024, 3, 17), utc(2024, 3, 22))),
        (90.0, "sunset", (utc(2024, 9, 22), utc(2024, 9, 28))),
        (-90.0, "sunrise", (utc(2024, 9, 20), utc(2024, 9, 26))),
        (-90.0, "dusk_astronomical", (utc(2024, 4, 20), utc(2024, 5, 31))),
    ],
)
def test_at_the_poles_an_event_comes_once_a_year(
    lat: float, event: str, between: tuple[datetime, datetime]
) -> None:
    moment = solar(event, lat, 0.0).next_after(utc(2024, 1, 1))
    assert between[0] <= moment <= between[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("noon", 0, 0), "solar event: 'noon' is not one of dawn_astronomical, dawn_civil"),
        (("sunrise", 91, 0), "solar lat: 91 is out of range -90 to 90"),
        (("sunrise", 0, -180.5), "solar lon: -180.5 is out of range -180 to 180"),
        (("sunrise", "51.5", 0), "solar lat: '51.5' is not a number of degrees"),
        (("sunrise", 0, float("nan")), "solar lon: nan is not a number of degrees"),
    ],
)
def test_bad_arguments_fail_when_declared(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        solar(*args)  # type: ignore[arg-type]
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, ValueError)  # Celery raises ValueError for these


def test_description_zone_and_celery_repr() -> None:
    dusk = solar("dusk_civil", 51.5074, -0.1278)
    assert dusk.to_dict() == {
        "type": "solar",
        "event": "dusk_civil",
        "lat": 51.5074,
        "lon": -0.1278,
    }
    assert from_dict(dusk.to_dict()) == dusk
    assert hash(from_dict(dusk.to_dict())) == hash(dusk)
    assert dusk != solar("dusk_civil", 51.5074, 0.0)
    assert repr(dusk) == "<solar: dusk_civil at latitude 51.5074, longitude: -0.1278>"
    # An event is an instant: no zone of its own, and the caller's zone changes nothing.
    assert dusk.with_tz("Asia/Tokyo") is dusk
    start = utc(2024, 5, 1)
    assert dusk.next_after(start, "Asia/Tokyo") == dusk.next_after(start)
