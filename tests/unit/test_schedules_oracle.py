"""crontab.next_after against independent answers, on generated expressions and start times.

- croniter (with ``day_or=False``, Celery's day rule) must agree exactly in UTC and in a zone
  without daylight saving (Asia/Kathmandu, +05:45), and in zones with it away from transitions
  (more than two days from one, at the start and at the answer).
- Near transitions, where croniter follows rules of its own, the answer must be the one the
  documented rules give, restated as a minute-by-minute scan: a wall time fires at the first
  instant whose clock shows it or later, unless the clock already showed it (a repeated hour).

Expressions use Celery's syntax within what croniter reads the same way: croniter 7 reads a
one-value range like ``3-3`` as ``*`` and steps a wrapped range (``22-2/3``) its own way, so those
two forms are left to test_schedules_crontab.py, which checks them against Celery's own values.
CELERIAC_CRON_ORACLE_EXAMPLES sets how many expressions each test draws (default 150).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from schedules_support import Transitions

from celeriac.schedules import ScheduleError, crontab

croniter = pytest.importorskip("croniter").croniter

EXAMPLES = int(os.environ.get("CELERIAC_CRON_ORACLE_EXAMPLES", "150"))
ORACLE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# (Celery keyword, lowest, highest, names) in cron's order of the fields.
FIELDS: list[tuple[str, int, int, tuple[str, ...]]] = [
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day_of_month", 1, 31, ()),
    ("month_of_year", 1, 12, MONTHS),
    ("day_of_week", 0, 6, DAYS),
]


def field_strategy(low: int, high: int, names: tuple[str, ...]) -> st.SearchStrategy[str]:
    """One field's expressions: ``*``, or 1-3 parts among a value, ``*/n``, a range (which may
    wrap past the field's end, as Celery allows) and an increasing range with a step. Built once
    per field: drawing from prebuilt strategies keeps hypothesis's overhead small."""
    numbers, steps, coin = st.integers(low, high), st.integers(1, high), st.booleans()
    kinds = st.sampled_from(["star", "star_step", "value", "range", "range_step"])

    @st.composite
    def value(draw: st.DrawFn) -> tuple[int, str]:
        number = draw(numbers)
        named: bool = draw(coin)
        if names and named:
            upper: bool = draw(coin)
            name = names[number - low]
            return number, name.upper() if upper else name
        return number, str(number)

    values = value()

    @st.composite
    def part(draw: st.DrawFn) -> str:
        kind = draw(kinds)
        if kind == "star":
            return "*"
        if kind == "star_step":
            return f"*/{draw(steps)}"
        first, first_text = draw(values)
        if kind == "value":
            return first_text
        last, last_text = draw(values)
        assume(first != last)
        if kind == "range":
            return f"{first_text}-{last_text}"
        assume(first < last)
        return f"{first_text}-{last_text}/{draw(steps)}"

    listed = st.lists(part(), min_size=1, max_size=3).map(",".join)
    return st.one_of(st.just("*"), listed, listed, listed)


FIELD_STRATEGIES = {name: field_strategy(low, high, names) for name, low, high, names in FIELDS}


@st.composite
def expressions(draw: st.DrawFn, days: bool = True) -> dict[str, str]:
    """Celery keyword arguments of a valid crontab (day fields ``*`` unless ``days``)."""
    kwargs = {
        name: draw(FIELD_STRATEGIES[name]) if days or name in ("minute", "hour") else "*"
        for name, *_ in FIELDS
    }
    try:
        make(kwargs)
    except ScheduleError:
        assume(False)  # the 31st of a 30-day month only, say: refused, as Celery does
    return kwargs


def make(kwargs: dict[str, str], tz: str | None = None) -> crontab:
    return crontab(
        minute=kwargs["minute"],
        hour=kwargs["hour"],
        day_of_week=kwargs["day_of_week"],
        day_of_month=kwargs["day_of_month"],
        month_of_year=kwargs["month_of_year"],
        tz=tz,
    )


def cron_line(kwargs: dict[str, str]) -> str:
    return " ".join(kwargs[name] for name, *_ in FIELDS)


START = datetime(2015, 1, 1, tzinfo=UTC)
SPAN = 20 * 365 * 86400
starts = st.lists(
    st.tuples(st.integers(0, SPAN), st.booleans()).map(
        lambda pair: START + timedelta(seconds=pair[0] - (pair[0] % 60 if pair[1] else 0))
    ),
    min_size=4,
    max_size=8,
)


def croniter_next(kwargs: dict[str, str], start: datetime, zone: ZoneInfo) -> datetime:
    answer: Any = croniter(cron_line(kwargs), start.astimezone(zone), day_or=False).get_next(
        datetime
    )
    assert isinstance(answer, datetime)
    return answer.astimezone(UTC)


@pytest.mark.parametrize("zone_name", ["UTC", "Asia/Kathmandu"])
def test_agrees_with_croniter_exactly_in_zones_without_daylight_saving(zone_name: str) -> None:
    zone = ZoneInfo(zone_name)

    @ORACLE
    @given(kwargs=expressions(), moments=starts)
    def check(kwargs: dict[str, str], moments: list[datetime]) -> None:
        schedule = make(kwargs, zone_name)
        for start in moments:
            assert schedule.next_after(start) == croniter_next(kwargs, start, zone), (
                cron_line(kwargs),
                start,
            )

    check()


TRANSITIONS: dict[str, Transitions] = {}


def transitions(zone_name: str) -> Transitions:
    if zone_name not in TRANSITIONS:  # answers may lie decades out (a Monday 29th of February)
        TRANSITIONS[zone_name] = Transitions(ZoneInfo(zone_name), 2014, 2070)
    return TRANSITIONS[zone_name]


@pytest.mark.parametrize(
    "zone_name", ["Europe/London", "America/New_York", "Australia/Lord_Howe", "America/Sao_Paulo"]
)
def test_agrees_with_croniter_away_from_transitions(zone_name: str) -> None:
    zone, changes = ZoneInfo(zone_name), transitions(zone_name)
    counted = {"compared": 0, "near a transition": 0}

    @ORACLE
    @given(kwargs=expressions(), moments=starts)
    def check(kwargs: dict[str, str], moments: list[datetime]) -> None:
        schedule = make(kwargs, zone_name)
        for start in moments:
            ours = schedule.next_after(start)
            if changes.near(start) or changes.near(ours):
                counted["near a transition"] += 1
                continue
            counted["compared"] += 1
            assert ours == croniter_next(kwargs, start, zone), (cron_line(kwargs), start)

    check()
    assert counted["compared"] >= 4 * EXAMPLES * 0.8, counted


def by_the_rules(schedule: crontab, start: datetime, zone: ZoneInfo) -> datetime:
    """The documented rules as a scan, minute by minute from ``start``: the instant a minute
    begins fires if its clock shows a wall time the crontab matches that the clock has not shown
    before (a gap's times are all first shown at its end; a repeated hour's were shown in the
    first pass). Independent of next_after's search."""
    moment = start.replace(second=0, microsecond=0)
    shown = max(  # the latest wall time shown before the first minute we look at
        (moment - timedelta(minutes=back)).astimezone(zone).replace(tzinfo=None)
        for back in range(181)
    )
    while True:
        moment += timedelta(minutes=1)
        wall = moment.astimezone(zone).replace(tzinfo=None)
        if wall > shown:
            minutes = int((wall - shown).total_seconds() // 60)
            for back in range(minutes):
                candidate = wall - timedelta(minutes=back)
                if _matches(schedule, candidate):
                    return moment
            shown = wall


def _matches(schedule: crontab, wall: datetime) -> bool:
    return (
        wall.minute in schedule.minute
        and wall.hour in schedule.hour
        and wall.day in schedule.day_of_month
        and wall.month in schedule.month_of_year
        and wall.isoweekday() % 7 in schedule.day_of_week
    )


@pytest.mark.parametrize(
    "zone_name", ["Europe/London", "America/New_York", "Australia/Lord_Howe", "America/Sao_Paulo"]
)
def test_matches_the_documented_rules_near_transitions(zone_name: str) -> None:
    zone = ZoneInfo(zone_name)
    changes = [moment for moment in transitions(zone_name).instants if moment.year <= 2030]

    @ORACLE
    @given(
        kwargs=expressions(days=False),
        change=st.sampled_from(changes),
        offsets=st.lists(st.integers(-180, 180), min_size=2, max_size=5),
        seconds=st.integers(0, 59),
    )
    def check(kwargs: dict[str, str], change: datetime, offsets: list[int], seconds: int) -> None:
        schedule = make(kwargs, zone_name)
        for offset in offsets:
            start = change + timedelta(minutes=offset, seconds=seconds)
            assert schedule.next_after(start) == by_the_rules(schedule, start, zone), (
                cron_line(kwargs),
                start,
            )

    check()
