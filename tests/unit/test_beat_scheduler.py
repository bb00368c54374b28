"""Beat on the in-process broker, with a clock the test moves: slots, catch-up policies, two
beats, split brain, failover, run-time changes and code sync. The same scheduler runs on every
broker; tests/integration/test_beat_processes.py runs real beat processes on each."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from celeriac import Celeriac, Task, signals
from celeriac.beat import slots
from celeriac.beat.entry import Entry, from_declaration
from celeriac.beat.memory_store import MemoryBeatStore
from celeriac.beat.scheduler import Beat, sync
from celeriac.errors import ImproperlyConfigured
from celeriac.schedules import crontab, schedule
from celeriac.testing import memory_app, worker_thread

T0 = 1_800_000_000.0  # a whole second, a whole minute (2027-01-15 08:00:00 UTC)


class Clock:
    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


def entry(**changes: Any) -> Entry:
    base = {"name": "tick", "task": "t.tick", "schedule": schedule(1.0)}
    return Entry(**{**base, **changes})


# -- slots: pure ------------------------------------------------------------------------------


def test_interval_slots_lie_on_the_epoch_grid() -> None:
    e = entry(schedule=schedule(30))
    assert slots.next_slot(e, at(7), None) == at(30)  # T0 is on the 30 s grid
    assert slots.next_slot(e, at(30), None) == at(60)


def test_a_new_entry_fires_nothing_at_once() -> None:
    plan = slots.plan(entry(), None, at(0.5), None)
    assert plan.fire == [] and plan.missed == []
    assert plan.next_due == at(1)


@pytest.mark.parametrize(
    ("policy", "grace", "fire", "missed"),
    [
        ("latest", None, [5], [1, 2, 3, 4]),
        ("all", None, [1, 2, 3, 4, 5], []),
        ("skip", None, [5], [1, 2, 3, 4]),  # slot 5 is on time (0.5 s late)
        ("all", 2.0, [4, 5], [1, 2, 3]),
        ("latest", 0.1, [], [1, 2, 3, 4, 5]),
    ],
)
def test_catch_up_policies(
    policy: str, grace: float | None, fire: list[int], missed: list[int]
) -> None:
    e = entry(catch_up=policy, misfire_grace=grace)
    plan = slots.plan(e, T0, at(5.5), None)
    assert plan.fire == [at(s) for s in fire]
    assert plan.missed == [at(s) for s in missed]
    assert plan.last == at(5)
    assert plan.next_due == at(6)


def test_a_paused_entrys_slots_pass_silently() -> None:
    plan = slots.plan(entry(paused=True), T0, at(3.5), None)
    assert plan.fire == [] and plan.missed == [] and plan.last == at(3)


def test_far_behind_the_walk_jumps_ahead() -> None:
    plan = slots.plan(entry(), T0, at(86_400.5), None)  # a day of every-second slots
    assert plan.fire == [at(86_400)]
    assert plan.skipped_ahead
    assert plan.next_due == at(86_401)


def test_slot_names_and_task_ids_are_the_same_in_every_beat() -> None:
    assert slots.slot_key("tick", at(1)) == "tick@2027-01-15T08:00:01+00:00"
    assert slots.slot_task_id("tick", at(1)) == slots.slot_task_id("tick", at(1))
    assert slots.slot_task_id("tick", at(1)) != slots.slot_task_id("tick", at(2))


# -- declaring ----------------------------------------------------------------------------------


def test_beat_schedule_entries_as_celery_writes_them() -> None:
    e = from_declaration(
        "nightly",
        {
            "task": "shop.cleanup",
            "schedule": crontab(minute=0, hour=3),
            "args": (7,),
            "options": {"queue": "low", "expires": 600},
        },
    )
    assert e.args == (7,) and e.options == {"queue": "low", "expires": 600}
    assert Entry.from_dict(e.to_dict()) == e
    assert from_declaration("ping", {"task": "t", "schedule": 30.0}).schedule == schedule(30)
    assert from_declaration("td", {"task": "t", "schedule": timedelta(minutes=1)}).schedule == (
        schedule(60)
    )
    with pytest.raises(ImproperlyConfigured, match=r"beat_schedule\['x'\]: unknown key"):
        from_declaration("x", {"task": "t", "schedule": 1, "sched": 2})
    with pytest.raises(ImproperlyConfigured, match="'schedule' is missing"):
        from_declaration("x", {"task": "t"})
    with pytest.raises(ImproperlyConfigured, match="catch_up must be"):
        from_declaration("x", {"task": "t", "schedule": 1, "catch_up": "some"})
    with pytest.raises(ImproperlyConfigured, match="must be JSON"):
        from_declaration("x", {"task": "t", "schedule": 1, "args": (object(),)})


def test_add_periodic_task_and_on_after_configure() -> None:
    app = memory_app("periodic")

    @app.task
    def ping(word: str) -> str:
        return word

    @app.on_after_configure.connect
    def setup(sender: Celeriac, **kwargs: Any) -> None:
        sender.add_periodic_task(10.0, ping.s("hello"), name="say hello", expires=5)
        sender.add_periodic_task(crontab(minute="*/15"), ping.s("q"), catch_up="skip")

    app.import_default_modules()  # what a worker or beat does when it loads the app
    declared = app.conf.beat_schedule
    assert declared["say hello"]["options"] == {"expires": 5}
    assert declared["say hello"]["args"] == ("hello",)
    (other,) = [n for n in declared if n != "say hello"]
    assert declared[other]["catch_up"] == "skip"
    with pytest.raises(ImproperlyConfigured, match="catch_up must be"):
        app.add_periodic_task(1, ping.s("x"), catch_up="never")


def test_sync_code_wins_unless_changed_at_run_time() -> None:
    code = {"a": entry(name="a"), "b": entry(name="b", schedule=schedule(5))}
    stored = {
        "a": entry(name="a", schedule=schedule(2)),  # from code, since changed in code
        "b": entry(name="b", schedule=schedule(9), origin="runtime"),  # changed at run time
        "gone": entry(name="gone"),  # removed from the code
        "mine": entry(name="mine", origin="runtime"),  # added at run time
    }
    changes, removed = sync(code, stored)
    assert changes == {"a": code["a"]}
    assert removed == ["gone"]


# -- the scheduler, ticked by hand ----------------------------------------------------------


@pytest.fixture
def app() -> Iterator[Celeriac]:
    application = memory_app("beat-tests")
    yield application
    application.close()


def run_beats(beats: list[Beat], clock: Clock, until: float, step: float = 0.25) -> None:
    async def go() -> None:
        for beat in beats:
            await beat.store.open()
        while clock.now < T0 + until:
            for beat in beats:
                await beat.tick()
            clock.now += step

    asyncio.run(go())


def fired_slots(app: Celeriac, name: str, expect: int) -> list[str]:
    """Run the fired tasks on a real worker and read back which slots they were."""
    seen: list[str] = []
    done = threading.Event()

    @app.task(name=name, bind=True)
    def tick(self: Task[[], None]) -> None:
        seen.append(self.request.beat_slot)
        if len(seen) >= expect:
            done.set()

    with worker_thread(app):
        assert done.wait(10), seen
    return seen


def test_two_beats_fire_each_slot_once(app: Celeriac) -> None:
    app.conf.beat_schedule = {"tick": {"task": "t.tick", "schedule": 1.0}}
    clock = Clock()
    beats = [Beat(app, node=n, clock=clock) for n in ("a", "b")]
    run_beats(beats, clock, until=20)
    assert beats[0].leading and not beats[1].leading
    assert beats[0].fired == 19 and beats[1].fired == 0  # slots 1..19; the walk starts at T0
    seen = fired_slots(app, "t.tick", 19)
    assert sorted(seen) == [at(s).isoformat() for s in range(1, 20)]


class EveryoneLeads(MemoryBeatStore):
    """Split brain: the store grants the lease to every node (a leader frozen past it)."""

    async def lead(self, node: str, ttl: float) -> bool:
        return True


def test_two_leaders_at_once_cannot_double_a_slot(app: Celeriac) -> None:
    app.conf.beat_schedule = {"tick": {"task": "t.tick", "schedule": 1.0}}
    clock = Clock()
    beats = [Beat(app, node=n, clock=clock, store=EveryoneLeads(app.broker_url)) for n in "ab"]
    run_beats(beats, clock, until=10)
    assert beats[0].fired == beats[1].fired == 9  # both sent every slot...
    seen = fired_slots(app, "t.tick", 9)
    assert sorted(seen) == [at(s).isoformat() for s in range(1, 10)]  # ...the broker kept one


def test_a_new_leader_catches_up_by_policy_and_reports_the_rest(app: Celeriac) -> None:
    app.conf.beat_schedule = {
        "latest": {"task": "t.latest", "schedule": 1.0},
        "all": {"task": "t.all", "schedule": 1.0, "catch_up": "all"},
    }
    missed: list[tuple[str, int]] = []

    def on_missed(sender: Any = None, entry: str = "", slots: Any = (), **_: Any) -> None:
        missed.append((entry, len(slots)))

    signals.beat_missed.connect(on_missed, weak=False)
    try:
        clock = Clock()
        first = Beat(app, node="first", clock=clock)
        run_beats([first], clock, until=5.1)  # fires slots 1..5
        asyncio.run(first.store.resign("first"))  # the leader is gone
        clock.now = T0 + 9.5  # slots 6..9 pass with no leader
        second = Beat(app, node="second", clock=clock)
        run_beats([second], clock, until=9.6)
    finally:
        signals.beat_missed.disconnect(on_missed)
    assert first.fired == 10
    assert second.fired == 1 + 4  # latest: slot 9 only; all: 6, 7, 8, 9
    assert missed == [("latest", 3)]


def test_run_time_changes_reach_the_leader(app: Celeriac) -> None:
    clock = Clock()
    beat = Beat(app, node="leader", clock=clock)
    run_beats([beat], clock, until=1)
    assert beat.fired == 0
    app.beat.add("every2", "t.work", 2.0, args=[1])
    run_beats([beat], clock, until=7.1)  # slots 2, 4, 6 (the walk starts at the add)
    assert beat.fired == 3
    app.beat.pause("every2")
    run_beats([beat], clock, until=11)
    assert beat.fired == 3
    assert [e.paused for e in app.beat.list()] == [True]
    assert app.beat.list()[0].origin == "runtime"
    app.beat.resume("every2")
    run_beats([beat], clock, until=13.1)  # no replay of the paused slots
    assert beat.fired == 4
    app.beat.remove("every2")
    run_beats([beat], clock, until=20)
    assert beat.fired == 4
    with pytest.raises(ImproperlyConfigured, match="no entry named 'every2'"):
        app.beat.pause("every2")


def test_overlap_skip_waits_for_the_last_run_to_finish(app: Celeriac) -> None:
    from celeriac.results.base import ResultMeta

    app.conf.beat_schedule = {"slow": {"task": "t.slow", "schedule": 1.0, "overlap": "skip"}}
    clock = Clock()
    beat = Beat(app, node="one", clock=clock)
    run_beats([beat], clock, until=1.1)  # slot 1 sent; nothing runs it: it stays unfinished
    assert beat.fired == 1
    run_beats([beat], clock, until=3.1)  # slots 2 and 3 skipped
    assert beat.fired == 1
    assert app.backend is not None
    app.backend.store(ResultMeta(slots.slot_task_id("slow", at(1)), "SUCCESS", None))
    run_beats([beat], clock, until=4.1)  # slot 1's run finished: slot 4 goes
    assert beat.fired == 2


def test_jitter_and_expires_shape_each_firing(app: Celeriac) -> None:
    app.conf.beat_schedule = {
        "spread": {"task": "t.spread", "schedule": 60.0, "jitter": 30, "expires": 45}
    }
    seen: list[tuple[dict[str, Any], datetime]] = []

    def capture(sender: Any = None, headers: Any = None, **kw: Any) -> None:
        seen.append((dict(headers), datetime.now(UTC)))

    signals.before_task_publish.connect(capture, weak=False)
    try:
        clock = Clock()
        beat = Beat(app, node="one", clock=clock)
        run_beats([beat], clock, until=181, step=1.0)
    finally:
        signals.before_task_publish.disconnect(capture)
    assert len(seen) == 3
    delays = []
    for minute, (headers, sent_at) in enumerate(seen, start=1):
        slot = at(60 * minute)
        assert headers["beat_slot"] == slot.isoformat()
        assert headers["expires"] == (slot + timedelta(seconds=45)).isoformat()
        eta = datetime.fromisoformat(headers["eta"])  # the jitter: a broker-side delay
        delays.append((eta - sent_at).total_seconds())
    assert all(-0.1 <= d <= 30.1 for d in delays), delays
    assert len(set(delays)) == 3  # drawn for each firing
