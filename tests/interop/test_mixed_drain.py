"""Issue 16, points 1 and 4: a Celery worker and a celeriac worker drain one queue together.

Both stop consuming the ``mixed`` queue (``cancel_consumer``, sent by Celery's client to both),
2,000 tasks are queued (half by a Celery client, half by a celeriac client), then both start
again (``add_consumer``: Celery's first, celeriac's once Celery's has run a task) and drain it
side by side. Every task records its run: none is lost,
none runs twice, both kinds take part, and nothing is left on the broker. The rate of each kind
is printed for the record.

What pausing itself must guarantee (while no worker consumes a queue, its messages wait on the
broker, none held by a worker) is a test of its own: celeriac's ``cancel_consumer`` starts its
waiting fetch over without the queue and has the transport give back what it took ahead
(``Transport.stop_consuming``: RabbitMQ's pushed messages, a cancelled claim's haul) before
it replies.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from worker_harness import wait_until

from interop.fleet import Fleet
from interop.runs import Run, read_runs

pytestmark = [pytest.mark.amqp, pytest.mark.redis]

TASKS = 2000
DRAIN_TIMEOUT = 90.0


def merged(replies: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Celery's broadcast replies (one ``{node: reply}`` each) as one mapping."""
    return {node: reply for one in replies or [] for node, reply in one.items()}


def rate(runs: list[Run], since: float) -> float:
    """A kind's tasks per second, from ``since`` (the drain began) to its last run."""
    return len(runs) / max(runs[-1].t - since, 1e-3)


def resume(fleet: Fleet, queue: str, nodes: list[str]) -> None:
    """``nodes`` start consuming ``queue`` again (``add_consumer``, Celery's client)."""
    started = merged(
        fleet.celery.control.add_consumer(queue, destination=nodes, reply=True, timeout=10)
    )
    assert started == {node: {"ok": f"add consumer {queue}"} for node in nodes}


@contextlib.contextmanager
def paused(fleet: Fleet, queue: str, celery_first: set[str] | None = None) -> Iterator[None]:
    """Both workers stop consuming ``queue`` (``cancel_consumer``, Celery's client to both)
    for the block, and start again when it ends, however it ends (``add_consumer``).

    With ``celery_first`` (task ids sent in the block), the Celery worker resumes first and
    celeriac's only once one of those has run on Celery's side: Celery's Redis consumer looks
    at a newly added queue on its next ``BRPOP`` (up to a second later), by which time a
    celeriac worker resumed with it may have drained a couple of thousand quick tasks alone."""
    nodes = [fleet.names.celeriac_node, fleet.names.celery_node]
    control = fleet.celery.control
    stopped = merged(control.cancel_consumer(queue, destination=nodes, reply=True, timeout=10))
    try:
        assert stopped == {node: {"ok": f"no longer consuming from {queue}"} for node in nodes}
        yield
    finally:
        if celery_first is None:
            resume(fleet, queue, nodes)
        else:
            resume(fleet, queue, [fleet.names.celery_node])
            wait_until(
                lambda: any(
                    run.kind == "celery" and run.id in celery_first for run in read_runs(fleet.runs)
                ),
                DRAIN_TIMEOUT,
                "the Celery worker to run a first task",
                interval=0.05,
            )
            resume(fleet, queue, [fleet.names.celeriac_node])


def wait_ran(fleet: Fleet, ids: set[str]) -> None:
    wait_until(
        lambda: ids <= {run.id for run in read_runs(fleet.runs)},
        DRAIN_TIMEOUT,
        f"{len(ids)} tasks to run",
        interval=0.1,
    )


def test_a_paused_queue_is_left_whole_on_the_broker(fleet: Fleet) -> None:
    """While no worker consumes a queue, what is sent to it waits there: none held, none run.
    Sent at once after both workers replied to ``cancel_consumer``, so a fetch of celeriac's
    still naming the queue (on Redis, a claim behind a wait; on RabbitMQ, the consumer pushing
    into the link's buffer) would take some."""
    queue = fleet.names.mixed_queue
    tick = fleet.celery.tasks["fleet.tick"]
    sent: set[str] = set()
    try:
        with paused(fleet, queue):
            sent = {tick.apply_async((n,), queue=queue, ignore_result=True).id for n in range(50)}
            assert {run.id for run in read_runs(fleet.runs)} & sent == set()
            assert fleet.queue_counts(queue) == (50, 0)
    finally:
        wait_ran(fleet, sent)  # nothing left for the next test


def test_both_kinds_drain_one_queue_none_lost_none_twice(fleet: Fleet) -> None:
    queue = fleet.names.mixed_queue
    before = {run.id for run in read_runs(fleet.runs)}
    half = TASKS // 2
    sent: set[str] = set()
    with paused(fleet, queue, celery_first=sent):
        by_celery = [
            fleet.celery.tasks["fleet.tick"].apply_async((n,), queue=queue, ignore_result=True)
            for n in range(half)
        ]
        by_celeriac = [
            fleet.celeriac.tasks["fleet.tick"].apply_async((n,), queue=queue, ignore_result=True)
            for n in range(half, TASKS)
        ]
        sent.update(r.id for r in [*by_celery, *by_celeriac])
    resumed = time.time()
    assert len(sent) == TASKS
    wait_ran(fleet, sent)
    # a task may run before its early ack reaches the broker: settled soon after, then checked
    wait_until(lambda: fleet.queue_counts(queue) == (0, 0), 10, "every ack to land")
    runs = [run for run in read_runs(fleet.runs) if run.id not in before]
    per_id = Counter(run.id for run in runs)
    assert set(per_id) == sent
    assert [task_id for task_id, n in per_id.items() if n > 1] == []
    by_kind = {kind: [r for r in runs if r.kind == kind] for kind in ("celeriac", "celery")}
    assert all(by_kind.values()), {kind: len(v) for kind, v in by_kind.items()}
    whole = runs[-1].t - resumed
    print(
        f"\nmixed drain of {TASKS} tasks in {whole:.2f} s from add_consumer "
        f"({TASKS / whole:.0f}/s): "
        + ", ".join(
            f"{kind} {len(v)} tasks at {rate(v, resumed):.0f}/s" for kind, v in by_kind.items()
        )
    )
