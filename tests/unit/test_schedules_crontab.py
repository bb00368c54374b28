"""crontab: Celery's syntax (values recorded from Celery 5.7), errors naming field and value,
Celery's day rule, next_after in a zone, and the stored description."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from schedules_support import firings, utc

from celeriac.errors import ImproperlyConfigured
from celeriac.schedules import (
    ParseException,
    ScheduleError,
    crontab,
    crontab_parser,
    from_dict,
)

# (field, expression, the set Celery 5.7's crontab expands it to)
CELERY_EXPANSIONS: list[tuple[str, str, set[int]]] = [
    ("minute", "*/15", {0, 15, 30, 45}),
    ("minute", "1,13,30-45,50-59/2", {1, 13, *range(30, 46), 50, 52, 54, 56, 58}),
    ("minute", "1-30/5", {1, 6, 11, 16, 21, 26}),
    ("minute", "*/61", {0}),
    ("minute", " 5", {5}),
    ("minute", "50-10/7", {50, 57, 4}),
    ("hour", "*/3", {0, 3, 6, 9, 12, 15, 18, 21}),
    ("hour", "0,8-17/2", {0, 8, 10, 12, 14, 16}),
    ("hour", "22-2", {22, 23, 0, 1, 2}),
    ("hour", "22-2/3", {22, 1}),
    ("day_of_week", "mon-fri", {1, 2, 3, 4, 5}),
    ("day_of_week", "fri-mon", {5, 6, 0, 1}),
    ("day_of_week", "Monday", {1}),
    ("day_of_week", "sat-tue/2", {6, 1}),
    ("day_of_week", "mon-fri/2", {1, 3, 5}),
    ("day_of_week", "*/2", {0, 2, 4, 6}),
    ("day_of_week", "sun", {0}),
    ("day_of_week", "SAT,sun", {0, 6}),
    ("day_of_week", "thurs", {4}),
    ("day_of_month", "*/3", {1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31}),
    ("day_of_month", "2-30/2", set(range(2, 31, 2))),
    ("day_of_month", "1-7,15-21", {*range(1, 8), *range(15, 22)}),
    ("day_of_month", "30-2", {30, 31, 1, 2}),
    ("month_of_year", "*/3", {1, 4, 7, 10}),
    ("month_of_year", "2-12/2", {2, 4, 6, 8, 10, 12}),
    ("month_of_year", "January-march", {1, 2, 3}),
    ("month_of_year", "nov-feb", {11, 12, 1, 2}),
    ("month_of_year", "sept", {9}),
]


@pytest.mark.parametrize(("field", "expression", "expected"), CELERY_EXPANSIONS)
def test_fields_expand_as_celery_expands_them(
    field: str, expression: str, expected: set[int]
) -> None:
    kwargs: dict[str, Any] = {field: expression}
    assert getattr(crontab(**kwargs), field) == expected


def test_no_arguments_is_every_minute_and_ints_and_lists_are_taken() -> None:
    every = crontab()
    assert every.minute == set(range(60))
    assert every.hour == set(range(24))
    assert every.day_of_week == set(range(7))
    assert every.day_of_month == set(range(1, 32))
    assert every.month_of_year == set(range(1, 13))
    some = crontab(minute=[0, 30], hour=range(9, 12), day_of_week=0, day_of_month={1, 15})
    assert some.minute == {0, 30}
    assert some.hour == {9, 10, 11}
    assert some.day_of_week == {0}
    assert some.day_of_month == {1, 15}
    assert crontab(minute=None).minute == set(range(60))  # Celery's cronfield: None is '*'


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"minute": "61"}, "crontab minute: 61 is out of range 0-59"),
        ({"minute": 60}, "crontab minute: 60 is out of range 0-59"),
        ({"hour": "24"}, "crontab hour: 24 is out of range 0-23"),
        ({"hour": "1-25"}, "crontab hour: 25 is out of range 0-23"),
        ({"day_of_week": "7"}, "crontab day_of_week: 7 is out of range 0-6 (Sunday is 0)"),
        ({"day_of_month": 0}, "crontab day_of_month: 0 is out of range 1-31"),
        ({"day_of_month": "32"}, "crontab day_of_month: 32 is out of range 1-31"),
        ({"month_of_year": "13"}, "crontab month_of_year: 13 is out of range 1-12"),
        ({"minute": "5/15"}, "crontab minute: '5/15': a step needs '*' or a range before '/'"),
        ({"minute": "*/0"}, "crontab minute: '*/0': the step '0' must be a whole number"),
        ({"minute": "*/"}, "crontab minute: '*/': the step '' must be a whole number"),
        ({"minute": "1-5/2/3"}, "crontab minute: '1-5/2/3': '1-5/2/3' has more than one '/'"),
        ({"minute": ""}, "crontab minute: '' is empty"),
        ({"minute": "1,,2"}, "crontab minute: '1,,2' has an empty part"),
        ({"minute": "-5"}, "crontab minute: '-5': negative or empty values are invalid"),
        ({"minute": "jan"}, "crontab minute: 'jan': 'jan' is not a number"),
        ({"hour": "mon"}, "crontab hour: 'mon': 'mon' is not a number"),
        ({"day_of_week": "monkey"}, "crontab day_of_week: 'monkey': 'monkey' is not a number or"),
        ({"month_of_year": "mo"}, "crontab month_of_year: 'mo': 'mo' is not a number or a month"),
        ({"minute": 1.5}, "crontab minute: 1.5 is not an int, a string expression or a list"),
        ({"minute": True}, "crontab minute: True is not a number or an expression"),
        ({"minute": []}, "crontab minute: [] selects nothing"),
        ({"minute": ["5"]}, "crontab minute: '5' in ['5'] is not a whole number"),
        (
            {"day_of_month": 30, "month_of_year": 2},
            "crontab day_of_month: 30 never occurs in month_of_year 2",
        ),
        (
            {"day_of_month": "31", "month_of_year": "4,6"},
            "crontab day_of_month: 31 never occurs in month_of_year 4,6",
        ),
        ({"tz": "Mars/Olympus"}, "crontab tz: 'Mars/Olympus' is not a known time zone"),
        ({"tz": 5}, "crontab tz: 5 is not a time zone"),
    ],
)
def test_a_bad_expression_fails_when_declared_naming_field_and_value(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ScheduleError) as caught:
        crontab(**kwargs)  # type: ignore[arg-type]
    assert str(caught.value).startswith(message)
    # Celery raises ValueError for these; code that catches it (or ParseException) still does.
    assert isinstance(caught.value, ImproperlyConfigured)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, ParseException)


def test_from_string_reads_crons_order() -> None:
    parsed = crontab.from_string("*/15 9-17 1-7 jan mon-fri")
    assert parsed == crontab("*/15", "9-17", "mon-fri", "1-7", "jan")
    with pytest.raises(ScheduleError, match="needs five fields"):
        crontab.from_string("* * * *")


def test_crontab_parser_is_celerys() -> None:
    assert crontab_parser(60).parse("*/15") == {0, 15, 30, 45}
    assert crontab_parser(24).parse("*/4") == {0, 4, 8, 12, 16, 20}
    assert crontab_parser(7).parse("mon-wed") == {1, 2, 3}
    assert crontab_parser(31, 1).parse("*/3") == set(range(1, 32, 3))
    assert crontab_parser(12, 1).parse("2-12/2") == {2, 4, 6, 8, 10, 12}
    with pytest.raises(crontab_parser.ParseException):
        crontab_parser(60).parse("60")


def test_next_after_is_the_next_matching_minute_strictly_after() -> None:
    quarter = crontab(minute="*/15")
    assert quarter.next_after(utc(2024, 1, 1, 10, 0)) == utc(2024, 1, 1, 10, 15)
    assert quarter.next_after(utc(2024, 1, 1, 10, 14, 59, 999999)) == utc(2024, 1, 1, 10, 15)
    assert quarter.next_after(utc(2024, 1, 1, 23, 45)) == utc(2024, 1, 2, 0, 0)
    assert crontab().next_after(utc(2024, 12, 31, 23, 59, 30)) == utc(2025, 1, 1, 0, 0)


def test_day_of_month_and_day_of_week_both_restrict_as_in_celery() -> None:
    # Celery: a day must match both (cron would fire on either): the first Monday of the month.
    first_monday = crontab(minute=0, hour=9, day_of_week="mon", day_of_month="1-7")
    assert firings(first_monday, utc(2024, 1, 1, 12), 4) == [
        "2024-02-05T09:00:00+00:00",
        "2024-03-04T09:00:00+00:00",
        "2024-04-01T09:00:00+00:00",
        "2024-05-06T09:00:00+00:00",
    ]
    friday_13th = crontab(0, 0, day_of_week=5, day_of_month=13)
    assert firings(friday_13th, utc(2024, 1, 1), 3) == [
        "2024-09-13T00:00:00+00:00",
        "2024-12-13T00:00:00+00:00",
        "2025-06-13T00:00:00+00:00",
    ]


def test_february_29th_fires_in_leap_years_even_on_a_given_weekday() -> None:
    leap = crontab(0, 0, day_of_month=29, month_of_year=2)
    assert firings(leap, utc(2023, 3, 1), 2) == [
        "2024-02-29T00:00:00+00:00",
        "2028-02-29T00:00:00+00:00",
    ]
    leap_monday = crontab(0, 0, day_of_week="mon", day_of_month=29, month_of_year=2)
    assert leap_monday.next_after(utc(2024, 3, 1)) == utc(2044, 2, 29)


def test_the_zone_is_the_schedules_own_else_the_default_else_utc() -> None:
    nine = crontab(minute=0, hour=9)
    start = utc(2024, 1, 10, 12)
    assert nine.next_after(start) == utc(2024, 1, 11, 9)
    in_kathmandu = nine.next_after(start, "Asia/Kathmandu")
    assert in_kathmandu == utc(2024, 1, 11, 3, 15)  # 09:00 +05:45
    assert in_kathmandu.tzinfo is UTC  # instants come back in UTC
    assert nine.next_after(start, ZoneInfo("Asia/Kathmandu")) == in_kathmandu
    own = crontab(minute=0, hour=9, tz="America/New_York")
    assert own.next_after(start, "Asia/Kathmandu") == utc(2024, 1, 10, 14)  # 09:00 -05:00
    assert nine.with_tz("America/New_York") == own
    assert own.with_tz(None) == nine
    assert own.zone() == ZoneInfo("America/New_York")
    assert nine.zone() == ZoneInfo("UTC")
    assert crontab(tz="utc").zone() == ZoneInfo("UTC")


def test_a_naive_datetime_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"crontab.next_after needs an aware datetime"):
        crontab().next_after(datetime(2024, 1, 1))
    with pytest.raises(TypeError, match="needs a datetime"):
        crontab().next_after("2024-01-01")  # type: ignore[arg-type]


def test_description_round_trips_compares_and_hashes() -> None:
    weekday = crontab(minute="*/15", hour="9-17", day_of_week="mon-fri", tz="Europe/London")
    stored = weekday.to_dict()
    assert stored == {
        "type": "crontab",
        "minute": "*/15",
        "hour": "9-17",
        "day_of_week": "mon-fri",
        "day_of_month": "*",
        "month_of_year": "*",
        "tz": "Europe/London",
    }
    back = from_dict(stored)
    assert back == weekday
    assert hash(back) == hash(weekday)
    assert pickle.loads(pickle.dumps(weekday)) == weekday
    # The same times however written are equal; a different zone is not.
    assert crontab(minute="0,15,30,45", hour=range(9, 18), day_of_week="1-5", tz="Europe/London")
    assert weekday == crontab(
        minute=[0, 15, 30, 45], hour=range(9, 18), day_of_week="1-5", tz="Europe/London"
    )
    assert weekday != weekday.with_tz("UTC")
    assert len({weekday, back, weekday.with_tz("UTC")}) == 2
    assert crontab(minute=[30, 0]).to_dict()["minute"] == "0,30"
    assert repr(crontab()) == "<crontab: * * * * * (m/h/dM/MY/d)>"
    assert repr(weekday) == "<crontab: */15 9-17 * * mon-fri (m/h/dM/MY/d) tz=Europe/London>"
    # Celery's attributes, read by django-celery-beat.
    assert (weekday._orig_minute, weekday._orig_day_of_week) == ("*/15", "mon-fri")


def test_a_bad_stored_form_fails_naming_what_is_wrong() -> None:
    with pytest.raises(ScheduleError, match="schedule type: 'cron' is not one of crontab"):
        from_dict({"type": "cron"})
    with pytest.raises(ScheduleError, match="crontab schedule: the stored form lacks 'hour'"):
        from_dict({"type": "crontab", "minute": "*"})
    with pytest.raises(ScheduleError, match="crontab minute: 99 is out of range"):
        from_dict({**crontab().to_dict(), "minute": "99"})
    with pytest.raises(ScheduleError, match="is not a stored schedule"):
        from_dict([1, 2])  # type: ignore[arg-type]


def test_a_year_of_firings_every_quarter_hour_is_evenly_spaced_in_utc() -> None:
    quarter = crontab(minute="*/15")
    moment = utc(2024, 1, 1)
    for _ in range(366 * 96):
        following = quarter.next_after(moment)
        assert following - moment == timedelta(minutes=15)
        moment = following
    assert moment == utc(2025, 1, 1)
