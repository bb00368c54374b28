"""Issue 16, point 1, on both brokers: work sent by one implementation's client runs on the other's
worker, and the client's own ``AsyncResult.get()`` reads the outcome (results in Celery's Redis
layout). Every test runs both ways: a Celery 5.7 client to the celeriac worker, a celeriac client
to the Celery worker, with one body written against Celery's API (:mod:`interop.directions`).
Where each task ran, and how often, comes from the tasks' own records (:mod:`interop.runs`).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from worker_harness import wait_until

from interop.directions import DIRECTIONS, Direction, direction
from interop.fleet import Fleet
from interop.runs import Run, read_runs, runs_of

pytestmark = [pytest.mark.amqp, pytest.mark.redis]

WAIT = 20.0


@pytest.fixture(params=DIRECTIONS)
def way(request: pytest.FixtureRequest, fleet: Fleet) -> Direction:
    return direction(fleet, request.param)


def ran(fleet: Fleet, task_id: str) -> list[Run]:
    return runs_of(fleet.runs, task_id)


def test_args_kwargs_delay_and_apply_async(fleet: Fleet, way: Direction) -> None:
    add = way.task("fleet.add")
    assert way.sig("fleet.add", 2, 3).delay().get(timeout=WAIT) == 5
    described = way.task("fleet.describe").apply_async(
        (1, "two", [3.5, None]), {"k": {"n": [1, 2]}, "s": "é"}, queue=way.queue
    )
    got = described.get(timeout=WAIT)
    assert (got["args"], got["kwargs"]) == ([1, "two", [3.5, None]], {"k": {"n": [1, 2]}, "s": "é"})
    assert got["by"] == way.worker
    assert [r.kind for r in ran(fleet, described.id)] == [way.worker]
    # delay() goes to the default queue, which both kinds consume: it runs once, on either
    anywhere = add.delay(20, 22)
    assert anywhere.get(timeout=WAIT) == 42
    assert len(ran(fleet, anywhere.id)) == 1


def test_countdown_and_eta_wait_until_due(fleet: Fleet, way: Direction) -> None:
    describe = way.task("fleet.describe")
    sent = time.time()
    later = describe.apply_async(("countdown",), queue=way.queue, countdown=1.0)
    eta = datetime.now(UTC) + timedelta(seconds=1.0)
    at = describe.apply_async(("eta",), queue=way.queue, eta=eta)
    by_countdown, by_eta = later.get(timeout=WAIT), at.get(timeout=WAIT)
    assert by_countdown["ran_at"] >= sent + 1.0, by_countdown["ran_at"] - sent
    assert by_eta["ran_at"] >= eta.timestamp(), by_eta["ran_at"] - eta.timestamp()
    assert datetime.fromisoformat(by_eta["eta"]) == eta
    assert by_countdown["by"] == by_eta["by"] == way.worker


def test_retries_then_success_and_retries_exhausted(fleet: Fleet, way: Direction) -> None:
    flaky = way.sig("fleet.flaky", 2).delay()
    assert flaky.get(timeout=WAIT) == {"retries": 2, "by": way.worker}
    runs = ran(fleet, flaky.id)
    assert [(r.kind, r.retries) for r in runs] == [(way.worker, n) for n in range(3)]

    gave_up = way.sig("fleet.give_up", "no more").delay()
    with pytest.raises(KeyError) as info:
        gave_up.get(timeout=WAIT)
    assert info.value.args == ("no more",)
    assert gave_up.state == "FAILURE"
    assert [r.retries for r in ran(fleet, gave_up.id)] == [0, 1]


def test_a_failure_raises_its_type_with_its_traceback(way: Direction) -> None:
    failed = way.sig("fleet.fail", "bad").delay()
    with pytest.raises(ValueError) as info:
        failed.get(timeout=WAIT)
    assert info.value.args == ("bad", 42)
    assert failed.state == "FAILURE"
    assert "ValueError" in (failed.traceback or "")


def test_chains_on_one_side_and_across_the_fleet(fleet: Fleet, way: Direction) -> None:
    here = way.chain(
        way.sig("fleet.add", 1, 2), way.sig("fleet.add", 10), way.sig("fleet.add", 100)
    )
    result = here.apply_async()
    assert result.get(timeout=WAIT) == 113
    assert result.parent.get(timeout=WAIT) == 13

    across = way.chain(
        way.sig("fleet.add", 1, 2),
        way.sig("fleet.add", 10, queue=way.other_queue),
        way.sig("fleet.add", 100),
    ).apply_async()
    assert across.get(timeout=WAIT) == 113
    ids = [across.parent.parent.id, across.parent.id, across.id]
    kinds = [[r.kind for r in ran(fleet, task_id)] for task_id in ids]
    assert kinds == [[way.worker], [way.other], [way.worker]]


def test_link_and_link_error_in_the_message(fleet: Fleet, way: Direction) -> None:
    callback_id, errback_id = str(uuid.uuid4()), str(uuid.uuid4())
    parent = way.task("fleet.add").apply_async(
        (2, 3), queue=way.queue, link=way.sig("fleet.add", 10, task_id=callback_id)
    )
    assert parent.get(timeout=WAIT) == 5
    assert way.client.AsyncResult(callback_id).get(timeout=WAIT) == 15
    assert [r.kind for r in ran(fleet, callback_id)] == [way.worker]

    failed = way.task("fleet.fail").apply_async(
        ("bad",), queue=way.queue, link_error=way.sig("fleet.on_error", task_id=errback_id)
    )
    with pytest.raises(ValueError):
        failed.get(timeout=WAIT)
    # Celery's one-argument errback: sent as a task with the failed task's id
    assert way.client.AsyncResult(errback_id).get(timeout=WAIT) == failed.id
    [errback_run] = ran(fleet, errback_id)
    assert (errback_run.kind, errback_run.note) == (way.worker, failed.id)


def test_a_task_expired_before_it_runs_is_revoked(fleet: Fleet, way: Direction) -> None:
    """Both pool slots of the worker are held by blocking tasks; a task that expires in one
    second is delivered (the worker holds it: prefetch), its expiry passes, the slots free up:
    it is REVOKED, never run, and the client's ``get()`` raises ``TaskRevokedError``."""
    release = fleet.root / f"release-{uuid.uuid4().hex}"
    blockers = [way.sig("fleet.block", str(release)).delay() for _ in range(2)]
    try:
        wait_until(lambda: all(ran(fleet, b.id) for b in blockers), WAIT, "both slots to be busy")
        expires = datetime.now(UTC) + timedelta(seconds=1.0)
        doomed = way.task("fleet.describe").apply_async(
            ("too late",), queue=way.queue, expires=expires
        )
        inspect = way.client.control.inspect(destination=[way.node], timeout=5)

        def held() -> bool:
            reserved = inspect.reserved() or {}
            return any(info["id"] == doomed.id for info in reserved.get(way.node, []))

        wait_until(held, WAIT, "the worker to hold the expiring task", interval=0.05)
        wait_until(lambda: datetime.now(UTC) > expires, 5, "the expiry to pass")
    finally:
        release.touch()
    with pytest.raises(way.revoked_error):
        doomed.get(timeout=WAIT)
    assert doomed.state == "REVOKED"
    assert [b.get(timeout=WAIT) for b in blockers] == [way.worker, way.worker]
    assert ran(fleet, doomed.id) == []


def test_priority_orders_the_waiting_tasks(fleet: Fleet, way: Direction) -> None:
    """A worker of one slot, one message per slot (``--prefetch-multiplier 1``), on the
    priority queue: while its slot is busy, four lax tasks then four urgent ones arrive; the
    urgent ones run first, except the one lax task the worker already held (Celery's prefetch
    with early acks: one message per slot besides the one running). Urgent is 9 on RabbitMQ,
    0 on Redis (kombu's order). On RabbitMQ, celeriac's QoS falls with the running task's early
    ack, so no second lax task is pushed to the worker ahead of the urgent ones."""
    names = fleet.names
    urgent, lax = names.priorities
    node = f"prio-{way.worker}-{uuid.uuid4().hex[:4]}@{names.tag}"
    start = fleet.start_celeriac_worker if way.worker == "celeriac" else fleet.start_celery_worker
    worker = start(node, [names.priority_queue], "--prefetch-multiplier", "1", concurrency=1)
    release = fleet.root / f"release-{uuid.uuid4().hex}"
    queue = names.priority_queue
    with fleet.stopping(worker):
        try:
            blocker = way.sig("fleet.block", str(release), queue=queue).delay()
            wait_until(lambda: bool(ran(fleet, blocker.id)), WAIT, "the slot to be busy")
            describe = way.task("fleet.describe")
            lax_ones = [
                describe.apply_async((f"lax{i}",), queue=queue, priority=lax) for i in range(4)
            ]
            urgent_ones = [
                describe.apply_async((f"urgent{i}",), queue=queue, priority=urgent)
                for i in range(4)
            ]
        finally:
            release.touch()
        outcomes = {r.id: r.get(timeout=WAIT) for r in [*lax_ones, *urgent_ones]}
    order = [run.id for run in read_runs(fleet.runs) if run.id in outcomes]
    labels = [outcomes[task_id]["args"][0] for task_id in order]
    assert {outcomes[r.id]["priority"] for r in urgent_ones} == {urgent}
    assert {outcomes[r.id]["priority"] for r in lax_ones} == {lax}
    # at most one lax one was already held by the worker when the urgent ones arrived
    held = 1 if labels[0] == "lax0" else 0
    expected = [f"urgent{i}" for i in range(4)] + [f"lax{i}" for i in range(held, 4)]
    assert labels[held:] == expected, labels
