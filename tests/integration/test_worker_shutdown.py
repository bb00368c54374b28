"""Warm and cold shutdown of a real worker process on the SQLite broker.

Warm (SIGTERM): the running task finishes and is stored, messages fetched but not started go back
to the queue at once, the process exits 0, and a later worker runs what was returned. Cold (a
second SIGTERM, or SIGQUIT): the process leaves at once and the running ``acks_late`` task's
message is back in the queue, so a later worker runs it again.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps.sqlite_tasks import build_app
from worker_harness import Harness, files, wait_until

from celeriac import Celeriac, states


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()


@pytest.mark.parametrize(
    ("task", "pool"),
    [("t.block", "threads"), ("t.late_block", "threads"), ("t.block", "prefork")],
)
def test_warm_shutdown_finishes_the_running_task_and_returns_the_rest(
    harness: Harness, task: str, pool: str
) -> None:
    app = harness.app
    runs, release = harness.dir / "runs", harness.dir / "release"
    runs.mkdir()
    blocker = app.send_task(task, (str(runs), str(release)))
    adds = [app.send_task("t.add", (i, 100)) for i in range(6)]
    # one slot, four messages held: the blocker runs, three adds wait in the worker (one of
    # them in the pool's own queue: prefork's waits there for the busy child)
    worker = harness.start_worker("--prefetch-multiplier", "4", concurrency=1, pool=pool)
    wait_until(lambda: len(files(runs)) == 1, 10, "the blocking task to start")
    assert harness.queue_size() == 3
    worker.send(signal.SIGTERM)
    # the three fetched-but-not-started messages go back while the blocker still runs
    wait_until(lambda: harness.queue_size() == 6, 10, "the fetched messages to be returned")
    assert worker.running
    assert blocker.state == states.PENDING
    release.touch()
    assert worker.wait_exit(15) == 0, worker.output()
    assert blocker.get(timeout=5) == {"delivery_count": 1}
    assert blocker.state == states.SUCCESS
    assert [r.state for r in adds] == [states.PENDING] * 6
    assert harness.queue_size() == 6
    assert "Traceback" not in worker.stderr()
    # a second worker runs every returned message; none was lost, none ran twice
    harness.start_worker()
    assert [r.get(timeout=10) for r in adds] == [i + 100 for i in range(6)]
    assert len(files(runs)) == 1
    assert harness.queue_size() == 0


@pytest.mark.parametrize("how", ["sigterm-twice", "sigquit"])
def test_cold_shutdown_returns_the_running_acks_late_task(harness: Harness, how: str) -> None:
    runs, release = harness.dir / "runs", harness.dir / "release"
    runs.mkdir()
    late = harness.app.send_task("t.late_block", (str(runs), str(release)))
    adds = [harness.app.send_task("t.add", (i, 100)) for i in range(5)]
    # one slot, four messages held: the acks_late task runs, three adds wait in the worker
    worker = harness.start_worker("--prefetch-multiplier", "4", concurrency=1)
    wait_until(lambda: len(files(runs)) == 1, 10, "the acks_late task to start")
    assert harness.queue_size() == 2
    if how == "sigquit":
        worker.send(signal.SIGQUIT)
    else:
        worker.send(signal.SIGTERM)
        # the warm shutdown has begun: the three waiting messages are back, the task still runs
        wait_until(lambda: harness.queue_size() == 5, 10, "the warm shutdown's requeue")
        assert worker.running
        worker.send(signal.SIGTERM)
    # the task is still blocked: the process must leave without waiting for it
    status = worker.wait_exit(5)
    assert status in (0, 1), worker.output()  # left by itself, not killed by the signal
    assert not release.exists()
    assert "Traceback" not in worker.stderr()
    assert harness.queue_size() == 6  # every unacked message is back, the running one too
    assert late.state == states.PENDING
    assert [r.state for r in adds] == [states.PENDING] * 5
    release.touch()
    harness.start_worker(concurrency=1)
    assert late.get(timeout=10) == {"delivery_count": 2}
    assert [r.get(timeout=10) for r in adds] == [i + 100 for i in range(5)]
    assert late.state == states.SUCCESS
    assert len(files(runs)) == 2  # ran twice in all, which acks_late allows
    assert harness.queue_size() == 0


def test_a_quick_second_sigterm_still_returns_every_unacked_message(harness: Harness) -> None:
    """SIGTERM twice in quick succession (Ctrl-C pressed twice, a supervisor's retry): the cold
    shutdown may catch the warm one while it returns the waiting messages, and must not lose
    track of them. The race is narrow, so the test tries a few times."""
    for attempt in range(6):
        quick_double_sigterm(harness, attempt)


def quick_double_sigterm(harness: Harness, attempt: int) -> None:
    db = harness.dir / f"broker-{attempt}.db"
    runs, release = harness.dir / f"runs-{attempt}", harness.dir / f"release-{attempt}"
    runs.mkdir()
    app = build_app(db)
    try:
        late = app.send_task("t.late_block", (str(runs), str(release)))
        for i in range(5):
            app.send_task("t.add", (i, 100))
        worker = harness.start_worker("--prefetch-multiplier", "4", concurrency=1, db=db)
        wait_until(lambda: len(files(runs)) == 1, 10, "the acks_late task to start")
        worker.send(signal.SIGTERM)
        worker.wait_for_line(r"(?i)warm shutdown", 10)
        worker.send(signal.SIGTERM)
        assert worker.wait_exit(5) in (0, 1), worker.output()
        waiting = asyncio.run(queue_size(app))
        assert waiting == 6, (
            f"attempt {attempt}: {waiting} of 6 messages back in the queue after a cold "
            f"shutdown; the rest stay leased until their lease expires\n{worker.output()}"
        )
        assert late.state == states.PENDING
    finally:
        release.touch()
        app.close()


async def queue_size(app: Celeriac, queue: str = "celery") -> int:
    transport = app.create_transport()
    await transport.connect()
    try:
        return await transport.size(queue)
    finally:
        await transport.close()
