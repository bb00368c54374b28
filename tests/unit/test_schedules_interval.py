"""schedule (Celery's interval), maybe_schedule, and Celery's is_due/remaining_estimate helpers
that code written for Celery calls on any schedule."""

from __future__ import annotations

import math
import pickle
from datetime import datetime, timedelta

import pytest
from schedules_support import firings, utc

from celeriac import Celeriac
from celeriac.schedules import (
    ScheduleError,
    crontab,
    from_dict,
    maybe_schedule,
    schedstate,
    schedule,
    solar,
)


def test_next_after_adds_the_interval() -> None:
    assert schedule(30).next_after(utc(2024, 1, 1, 10, 0, 5)) == utc(2024, 1, 1, 10, 0, 35)
    assert schedule(0.25).next_after(utc(2024, 1, 1)) == utc(2024, 1, 1) + timedelta(seconds=0.25)
    every_day = schedule(timedelta(days=1))
    assert every_day.next_after(utc(2024, 2, 28, 13)) == utc(2024, 2, 29, 13)
    assert every_day.seconds == 86400.0


@pytest.mark.parametrize(
    ("run_every", "message"),
    [
        (0, "schedule run_every: 0 must be more than 0 seconds"),
        (-5, "schedule run_every: -5 must be more than 0 seconds"),
        (timedelta(0), "schedule run_every: datetime.timedelta(0) must be more than 0 seconds"),
        ("30", "schedule run_every: '30' is not a number of seconds or a timedelta"),
        (None, "schedule run_every: None is not a number of seconds or a timedelta"),
        (True, "schedule run_every: True is not a number of seconds or a timedelta"),
        (math.inf, "schedule run_every: inf is not a finite number"),
    ],
)
def test_a_bad_interval_fails_when_declared(run_every: object, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        schedule(run_every)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_relative_rounds_to_the_intervals_resolution_as_celery_does() -> None:
    hourly = schedule(3600, relative=True)
    assert hourly.next_after(utc(2024, 1, 1, 10, 20)) == utc(2024, 1, 1, 11, 0)
    assert hourly.next_after(utc(2024, 1, 1, 11, 0)) == utc(2024, 1, 1, 12, 0)
    # 90 minutes from 10:20 is 11:50, cut to the hour: 11:00.
    assert schedule(5400, relative=True).next_after(utc(2024, 1, 1, 10, 20)) == utc(2024, 1, 1, 11)
    # An hour's resolution in Kathmandu is the hour its clocks show (:15 past in UTC).
    kathmandu = schedule(3600, relative=True, tz="Asia/Kathmandu")
    assert kathmandu.next_after(utc(2024, 1, 1, 10, 20)) == utc(2024, 1, 1, 11, 15)
    assert firings(schedule(86400, relative=True), utc(2024, 1, 1, 17, 5), 2) == [
        "2024-01-02T00:00:00+00:00",
        "2024-01-03T00:00:00+00:00",
    ]
    # Under a minute there is nothing to round to.
    assert schedule(20, relative=True).next_after(utc(2024, 1, 1, 0, 0, 5)) == utc(
        2024, 1, 1, 0, 0, 25
    )


def test_description_equality_and_celery_repr() -> None:
    half_minute = schedule(30)
    assert half_minute == schedule(timedelta(seconds=30))
    assert half_minute == timedelta(seconds=30)  # Celery compares an interval to a timedelta
    assert hash(half_minute) == hash(timedelta(seconds=30))
    assert half_minute != schedule(30, relative=True)
    assert half_minute != schedule(30, tz="Europe/London")
    stored = schedule(90, relative=True, tz="Europe/London").to_dict()
    assert stored == {"type": "interval", "every": 90.0, "relative": True, "tz": "Europe/London"}
    assert from_dict(stored) == schedule(90, relative=True, tz="Europe/London")
    assert from_dict(half_minute.to_dict()) == half_minute
    assert pickle.loads(pickle.dumps(half_minute)) == half_minute
    with pytest.raises(ScheduleError, match="interval schedule every: 'x' is not a number"):
        from_dict({"type": "interval", "every": "x"})
    assert repr(half_minute) == "<freq: 30.00 seconds>"
    assert repr(schedule(1)) == "<freq: 1.00 second>"
    assert repr(schedule(3600)) == "<freq: 1.00 hour>"
    assert repr(schedule(90)) == "<freq: 1.50 minutes>"
    assert repr(schedule(172800)) == "<freq: 2.00 days>"
    assert repr(schedule(0.001)) == "<freq: now>"
    assert schedule(7200).human_seconds == "2.00 hours"


def test_maybe_schedule_is_celerys() -> None:
    assert maybe_schedule(30) == schedule(30)
    assert maybe_schedule(timedelta(minutes=5), relative=True) == schedule(300, relative=True)
    nine = crontab(minute=0, hour=9)
    assert maybe_schedule(nine) is nine
    assert maybe_schedule(None) is None
    app = object()
    assert maybe_schedule(nine, app=app) is nine
    assert nine.app is app
    with pytest.raises(ScheduleError, match=r"schedule: '\*/5 \* \* \* \*' is not a number"):
        maybe_schedule("*/5 * * * *")  # type: ignore[arg-type]


NOW = utc(2024, 1, 1, 10, 7)


def test_is_due_and_remaining_estimate_as_celery_calls_them() -> None:
    every_half_minute = schedule(30, nowfun=lambda: NOW)
    assert every_half_minute.is_due(NOW - timedelta(seconds=40)) == schedstate(True, 30.0)
    assert every_half_minute.is_due(NOW - timedelta(seconds=10)) == (False, 20.0)
    assert every_half_minute.remaining_estimate(NOW - timedelta(seconds=10)) == timedelta(
        seconds=20
    )
    quarter = crontab(minute="*/15", nowfun=lambda: NOW)
    due, following = quarter.is_due(utc(2024, 1, 1, 9, 45))  # 10:00 was due
    assert due
    assert following == 8 * 60.0  # until 10:15
    assert quarter.is_due(utc(2024, 1, 1, 10, 0)) == (False, 480.0)
    # A naive last run is read as UTC, as Celery reads it.
    naive = datetime(2024, 1, 1, 10, 0)  # Celery callers pass naive ones
    assert quarter.remaining_estimate(naive) == timedelta(minutes=8)
    sunrise = solar("sunrise", 51.5074, -0.1278, nowfun=lambda: NOW)
    assert sunrise.is_due(utc(2024, 1, 1))[0]  # 08:06 was due


def test_the_helpers_read_the_zone_of_the_app_they_were_given() -> None:
    app = Celeriac("zones", broker="memory://")
    app.conf.timezone = "Asia/Kathmandu"
    nine = crontab(minute=0, hour=9, nowfun=lambda: utc(2024, 1, 1, 3, 0), app=app)
    assert nine.remaining_estimate(utc(2024, 1, 1, 2, 0)) == timedelta(minutes=15)  # 09:00 +05:45
    assert crontab(minute=0, hour=9, nowfun=lambda: utc(2024, 1, 1, 3, 0)).remaining_estimate(
        utc(2024, 1, 1, 2, 0)
    ) == timedelta(hours=6)  # no app: UTC
