"""Daylight saving, as celeriac.schedules defines it, on fixed dates in zones with unusual rules
and over whole years: a time in a gap fires once right after it, a repeated time fires once (its
first occurrence), a daily entry fires exactly once every local day, intervals are elapsed time.

Transitions used (tzdata): London 2024-03-31 01:00->02:00 and 2024-10-27 02:00->01:00; New York
2024-03-10 02:00->03:00 and 2024-11-03 02:00->01:00; Lord Howe Island (30-minute shift)
2024-04-07 02:00->01:30 and 2024-10-06 02:00->02:30; Sydney 2024-04-07 03:00->02:00 and
2024-10-06 02:00->03:00; Sao Paulo (at midnight) 2018-02-18 00:00->2018-02-17 23:00 and
2018-11-04 00:00->01:00; Kathmandu +05:45 all year.
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from schedules_support import Transitions, chain, firings, shown, utc

from celeriac.schedules import crontab, schedule


def local(
    zone: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0, fold: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone), fold=fold)


# -- a time in a spring-forward gap: once, at the first instant after the gap ------------------


@pytest.mark.parametrize(
    ("zone", "hour", "minute", "day", "expected"),
    [
        ("Europe/London", 1, 30, date(2024, 3, 31), "2024-03-31T02:00:00+01:00"),
        ("America/New_York", 2, 30, date(2024, 3, 10), "2024-03-10T03:00:00-04:00"),
        ("America/New_York", 2, 0, date(2024, 3, 10), "2024-03-10T03:00:00-04:00"),
        ("Australia/Lord_Howe", 2, 15, date(2024, 10, 6), "2024-10-06T02:30:00+11:00"),
        ("Australia/Sydney", 2, 30, date(2024, 10, 6), "2024-10-06T03:00:00+11:00"),
        ("America/Sao_Paulo", 0, 0, date(2018, 11, 4), "2018-11-04T01:00:00-02:00"),
    ],
)
def test_a_daily_time_in_the_gap_fires_once_right_after_it(
    zone: str, hour: int, minute: int, day: date, expected: str
) -> None:
    daily = crontab(minute=minute, hour=hour, tz=zone)
    before, after = day - timedelta(days=1), day + timedelta(days=1)
    start = local(zone, day.year, day.month, day.day, 12) - timedelta(days=2)
    assert firings(daily, start, 3) == [
        local(zone, before.year, before.month, before.day, hour, minute).isoformat(),
        expected,
        local(zone, after.year, after.month, after.day, hour, minute).isoformat(),
    ]


def test_every_quarter_hour_through_a_gap_fires_once_at_its_end() -> None:
    quarter = crontab(minute="*/15", tz="Europe/London")
    # 01:00, 01:15, 01:30 and 01:45 do not exist; they and 02:00 are the one instant 02:00 BST.
    assert firings(quarter, local("Europe/London", 2024, 3, 31, 0, 30), 4) == [
        "2024-03-31T00:45:00+00:00",
        "2024-03-31T02:00:00+01:00",
        "2024-03-31T02:15:00+01:00",
        "2024-03-31T02:30:00+01:00",
    ]
    lord_howe = crontab(minute="*/15", tz="Australia/Lord_Howe")
    assert firings(lord_howe, local("Australia/Lord_Howe", 2024, 10, 6, 1, 40), 3) == [
        "2024-10-06T01:45:00+10:30",
        "2024-10-06T02:30:00+11:00",
        "2024-10-06T02:45:00+11:00",
    ]


# -- a time that occurs twice: once, at its first occurrence ----------------------------------


@pytest.mark.parametrize(
    ("zone", "hour", "minute", "day", "expected_utc"),
    [
        ("Europe/London", 1, 30, date(2024, 10, 27), utc(2024, 10, 27, 0, 30)),
        ("America/New_York", 1, 30, date(2024, 11, 3), utc(2024, 11, 3, 5, 30)),
        ("Australia/Lord_Howe", 1, 45, date(2024, 4, 7), utc(2024, 4, 6, 14, 45)),
        ("Australia/Sydney", 2, 30, date(2024, 4, 7), utc(2024, 4, 6, 15, 30)),
        ("America/Sao_Paulo", 23, 30, date(2018, 2, 17), utc(2018, 2, 18, 1, 30)),
    ],
)
def test_a_repeated_daily_time_fires_once_at_its_first_occurrence(
    zone: str, hour: int, minute: int, day: date, expected_utc: datetime
) -> None:
    daily = crontab(minute=minute, hour=hour, tz=zone)
    around = utc(day.year, day.month, day.day)
    fired = chain(daily, around - timedelta(days=2), around + timedelta(days=2))
    that_day = [moment for moment in fired if moment.astimezone(ZoneInfo(zone)).date() == day]
    assert that_day == [expected_utc]
    assert that_day[0].astimezone(ZoneInfo(zone)).fold == 0
    # Asked from inside the second pass of the repeated hour, the answer is the next day's.
    second_pass = expected_utc + timedelta(minutes=(60 if zone != "Australia/Lord_Howe" else 30))
    assert second_pass.astimezone(ZoneInfo(zone)).replace(tzinfo=None) == datetime.combine(
        day, time(hour, minute)
    )
    following = daily.next_after(second_pass).astimezone(ZoneInfo(zone))
    assert following.date() == day + timedelta(days=1)


def test_every_quarter_hour_is_quiet_during_the_second_pass_of_the_repeated_hour() -> None:
    quarter = crontab(minute="*/15", tz="Europe/London")
    fired = chain(quarter, utc(2024, 10, 26, 23, 50), utc(2024, 10, 27, 2, 20))
    assert shown(fired, "Europe/London") == [
        "2024-10-27T01:00:00+01:00",
        "2024-10-27T01:15:00+01:00",
        "2024-10-27T01:30:00+01:00",
        "2024-10-27T01:45:00+01:00",
        "2024-10-27T02:00:00+00:00",
        "2024-10-27T02:15:00+00:00",
    ]
    # A question asked with a second-pass time of the zone itself (fold=1) compares as an
    # instant, not as a wall clock: 01:20 GMT is after 01:45 BST.
    in_second_pass = local("Europe/London", 2024, 10, 27, 1, 20, fold=1)
    assert in_second_pass.utcoffset() == timedelta(0)
    assert quarter.next_after(in_second_pass) == utc(2024, 10, 27, 2, 0)


def test_hourly_crontab_across_both_changes() -> None:
    hourly = crontab(minute=0, tz="America/New_York")
    spring = chain(hourly, utc(2024, 3, 10, 5, 30), utc(2024, 3, 10, 9, 0))
    assert shown(spring, "America/New_York") == [
        "2024-03-10T01:00:00-05:00",
        "2024-03-10T03:00:00-04:00",  # 02:00 does not exist: it is 03:00, once
        "2024-03-10T04:00:00-04:00",
        "2024-03-10T05:00:00-04:00",
    ]
    fall = chain(hourly, utc(2024, 11, 3, 3, 30), utc(2024, 11, 3, 8, 0))
    assert shown(fall, "America/New_York") == [
        "2024-11-03T00:00:00-04:00",
        "2024-11-03T01:00:00-04:00",  # 01:00 comes twice: the first
        "2024-11-03T02:00:00-05:00",
        "2024-11-03T03:00:00-05:00",
    ]


def test_kathmandu_and_utc_have_no_surprises() -> None:
    nine = crontab(minute=0, hour=9)
    assert nine.next_after(utc(2024, 6, 1), "Asia/Kathmandu") == utc(2024, 6, 1, 3, 15)
    quarter_to = crontab(minute=45, hour="*/6", tz="Asia/Kathmandu")
    fired = chain(quarter_to, utc(2024, 1, 1), utc(2025, 1, 1))
    gaps = {later - earlier for earlier, later in itertools.pairwise(fired)}
    assert gaps == {timedelta(hours=6)}
    assert len(fired) == 366 * 4


# -- a daily entry fires exactly once on every local day, over whole years ---------------------

ZONE_YEARS = [
    ("Europe/London", 2024),
    ("America/New_York", 2024),
    ("Australia/Lord_Howe", 2024),
    ("Australia/Sydney", 2024),
    ("America/Sao_Paulo", 2018),
    ("Asia/Kathmandu", 2024),
    ("UTC", 2024),
]
DAILY_TIMES = [time(0, 0), time(1, 30), time(1, 45), time(2, 0), time(2, 15), time(2, 30)]
DAILY_TIMES += [time(3, 0), time(12, 0), time(23, 30), time(23, 59)]


def first_instant_showing_at_least(zone: ZoneInfo, day: date, wanted: time) -> datetime:
    """The rules restated independently: a daily time fires at the first instant whose wall clock
    on that day shows it or later (its first occurrence, or the end of the gap it falls in).
    Found by scanning the day minute by minute in UTC."""
    moment = datetime.combine(day, time(0), UTC) - timedelta(hours=15)
    target = datetime.combine(day, wanted)
    while True:
        wall = moment.astimezone(zone).replace(tzinfo=None)
        if wall >= target:
            return moment
        moment += timedelta(minutes=1)


@pytest.mark.parametrize(("zone_name", "year"), ZONE_YEARS)
def test_a_daily_entry_fires_exactly_once_every_local_day_of_a_year(
    zone_name: str, year: int
) -> None:
    zone = ZoneInfo(zone_name)
    transitions = Transitions(zone, year, year)
    days = [date(year, 1, 1) + timedelta(days=n) for n in range(366)]
    days = [day for day in days if day.year == year]
    for wanted in DAILY_TIMES:
        daily = crontab(minute=wanted.minute, hour=wanted.hour, tz=zone_name)
        start = datetime(year - 1, 12, 31, 23, 59, 30, tzinfo=zone)
        fired = chain(daily, start, datetime(year, 12, 31, 23, 59, 59, tzinfo=zone))
        per_day = Counter(moment.astimezone(zone).date() for moment in fired)
        assert set(per_day) == set(days), (zone_name, wanted)
        assert set(per_day.values()) == {1}, (zone_name, wanted)
        for moment in fired:
            shown = moment.astimezone(zone)
            if transitions.near(moment, timedelta(days=1)):
                expected = first_instant_showing_at_least(zone, shown.date(), wanted)
                assert moment == expected, (zone_name, wanted, moment)
            else:
                assert shown.time() == wanted, (zone_name, wanted, moment)


# -- intervals are elapsed time -------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "start"),
    [
        ("Europe/London", utc(2024, 3, 30, 22)),
        ("Europe/London", utc(2024, 10, 26, 22)),
        ("Australia/Lord_Howe", utc(2024, 10, 5, 12)),
        ("America/Sao_Paulo", utc(2018, 2, 17, 22)),
    ],
)
def test_an_hourly_interval_is_3600_seconds_apart_across_a_change(
    zone: str, start: datetime
) -> None:
    hourly = schedule(3600)
    fired = chain(hourly, start, start + timedelta(hours=8), zone)
    assert len(fired) == 8
    assert {b - a for a, b in itertools.pairwise(fired)} == {timedelta(seconds=3600)}
    offsets = {moment.astimezone(ZoneInfo(zone)).utcoffset() for moment in fired}
    assert len(offsets) == 2  # the clocks changed in between, the interval did not


def test_a_relative_hourly_interval_is_on_the_hour_and_3600_seconds_apart() -> None:
    relative = schedule(3600, relative=True, tz="Europe/London")
    fired = chain(relative, utc(2024, 10, 26, 23, 13), utc(2024, 10, 27, 3, 0))
    assert shown(fired, "Europe/London") == [
        "2024-10-27T01:00:00+01:00",
        "2024-10-27T01:00:00+00:00",  # the repeated hour is its own whole hour
        "2024-10-27T02:00:00+00:00",
        "2024-10-27T03:00:00+00:00",
    ]


def test_a_relative_daily_interval_is_at_midnight_even_a_missing_one() -> None:
    daily = schedule(timedelta(days=1), relative=True, tz="America/Sao_Paulo")
    assert firings(daily, utc(2018, 11, 2, 13), 4) == [
        "2018-11-03T00:00:00-03:00",
        "2018-11-04T01:00:00-02:00",  # midnight did not exist that day
        "2018-11-05T00:00:00-02:00",
        "2018-11-06T00:00:00-02:00",
    ]
