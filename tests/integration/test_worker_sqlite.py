"""Real worker processes on the embedded SQLite broker: results, retries, expiry, dead letters,
several workers on one file, and a worker killed by -9.

Every worker is a ``python -m celeriac -A apps.sqlite_tasks worker`` child of this test, started
and stopped through :class:`worker_harness.Harness`; every wait is on an event (a result, a file
appearing, the process exiting) with a deadline.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from worker_harness import APP_SPEC, Harness, files, wait_until

from celeriac import states
from celeriac.errors import TaskRevokedError
from celeriac.results.base import ResultMeta


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def short_lease(tmp_path: Path) -> Iterator[Harness]:
    """A harness whose broker leases last 1 s: a dead worker's messages come back quickly."""
    h = Harness(tmp_path, lease_seconds=1.0)
    try:
        yield h
    finally:
        h.close()


def meta_of(harness: Harness, task_id: str) -> ResultMeta:
    backend = harness.app.backend
    assert backend is not None
    return backend.get_meta(task_id)


# -- 1. results -------------------------------------------------------------------------------


def test_a_batch_of_tasks_all_give_their_values(harness: Harness) -> None:
    harness.start_worker()
    add = harness.app.tasks["t.add"]
    results = [add.delay(i, 1000) for i in range(500)]
    assert [r.get(timeout=30) for r in results] == [i + 1000 for i in range(500)]
    assert {r.state for r in results} == {states.SUCCESS}
    assert harness.queue_size() == 0


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_an_async_def_task_runs_and_returns(harness: Harness, pool: str) -> None:
    harness.start_worker(pool=pool)
    square = harness.app.tasks["t.async_square"]
    assert square.is_async
    results = [square.delay(i) for i in range(10)]
    assert [r.get(timeout=10) for r in results] == [i * i for i in range(10)]


def test_a_countdown_waits_on_the_broker_not_in_the_worker(harness: Harness) -> None:
    harness.start_worker()
    sent = time.time()
    result = harness.app.send_task("t.stamp", (7,), countdown=1)
    # while it is not due, the message waits in the queue unleased (a worker holding it in
    # memory would have leased it, and the queue would be empty)
    while time.time() < sent + 0.8:
        assert harness.queue_size() == 1
        time.sleep(0.05)
    value = result.get(timeout=10)
    assert value["x"] == 7
    assert value["ran_at"] - sent >= 1.0
    # delivered exactly once: no worker fetched it early and handed it back
    assert value["delivery_count"] == 1
    date_done = result.date_done
    assert date_done is not None
    assert date_done - sent >= 1.0


def test_a_worker_consumes_only_the_queues_it_is_given(harness: Harness) -> None:
    harness.start_worker("-Q", "io,cpu")
    app = harness.app
    io = app.send_task("t.add", (1, 2), queue="io")
    cpu = app.send_task("t.add", (3, 4), queue="cpu")
    other = app.send_task("t.add", (5, 6))  # the default queue, "celery": not consumed
    assert io.get(timeout=10) == 3
    assert cpu.get(timeout=10) == 7
    assert other.state == states.PENDING
    assert harness.queue_size("celery") == 1
    assert harness.queue_size("io") == harness.queue_size("cpu") == 0


# -- 2. retries and failures ------------------------------------------------------------------


def test_retry_twice_then_succeed(harness: Harness) -> None:
    harness.start_worker()
    runs = harness.dir / "runs.txt"
    result = harness.app.send_task("t.retry_twice", (str(runs),))
    assert result.get(timeout=15) == 2
    assert result.state == states.SUCCESS
    assert meta_of(harness, result.id).retries == 2
    assert runs.read_text().splitlines() == ["retries=0", "retries=1", "retries=2"]


def test_autoretry_gives_up_after_max_retries(harness: Harness) -> None:
    harness.start_worker()
    runs = harness.dir / "runs.txt"
    result = harness.app.send_task("t.always_fails", (str(runs),))
    with pytest.raises(
        ConnectionError
    ):  # Celery's rule: the task's own error, once retries are spent
        result.get(timeout=15)
    assert result.state == states.FAILURE
    assert meta_of(harness, result.id).retries == 2
    # the first run and exactly max_retries=2 retries
    assert runs.read_text().splitlines() == ["retries=0", "retries=1", "retries=2"]


def test_a_failing_task_reraises_its_own_exception_with_traceback(harness: Harness) -> None:
    harness.start_worker()
    result = harness.app.send_task("t.fail_value", (42,))
    with pytest.raises(ValueError, match=r"^bad value 42$"):
        result.get(timeout=10)
    assert result.state == states.FAILURE
    assert isinstance(result.result, ValueError)
    traceback = result.traceback
    assert traceback is not None
    assert "Traceback (most recent call last)" in traceback
    assert "in fail_value" in traceback
    assert traceback.rstrip().endswith("ValueError: bad value 42")


# -- 3. expiry --------------------------------------------------------------------------------


def test_expired_tasks_are_revoked_and_never_run(harness: Harness) -> None:
    app = harness.app
    expired_past = harness.dir / "ran-past"
    expired_soon = harness.dir / "ran-soon"
    control = harness.dir / "ran-control"
    past = app.send_task(
        "t.touch", (str(expired_past),), expires=datetime.now(UTC) - timedelta(seconds=5)
    )
    sent = time.time()
    soon = app.send_task("t.touch", (str(expired_soon),), expires=0.01)
    fresh = app.send_task("t.touch", (str(control),))
    wait_until(lambda: time.time() > sent + 0.05, 1, "the 10 ms expiry to pass")
    harness.start_worker()
    # the control task proves the marker mechanism works and that the worker consumed the queue
    assert fresh.get(timeout=10) == str(control)
    assert control.exists()
    for result in (past, soon):
        with pytest.raises(TaskRevokedError, match="expired"):
            result.get(timeout=10)
        assert result.state == states.REVOKED
    assert not expired_past.exists()
    assert not expired_soon.exists()
    assert harness.queue_size() == 0
    assert harness.dead_letters() == []


def test_a_task_that_expires_while_held_by_the_worker_is_not_run(harness: Harness) -> None:
    runs, release = harness.dir / "runs", harness.dir / "release"
    runs.mkdir()
    marker = harness.dir / "ran-late"
    app = harness.app
    blocker = app.send_task("t.block", (str(runs), str(release)))
    harness.start_worker(concurrency=1)
    wait_until(lambda: len(files(runs)) == 1, 10, "the blocking task to start")
    sent = time.time()
    late = app.send_task("t.touch", (str(marker),), expires=0.3)
    # the worker fetches it into its prefetch window (still valid), where it waits for the slot
    wait_until(lambda: harness.queue_size() == 0, 5, "the worker to fetch the message")
    wait_until(lambda: time.time() > sent + 0.5, 2, "the message to expire in the worker")
    release.touch()
    assert blocker.get(timeout=10) == {"delivery_count": 1}
    with pytest.raises(TaskRevokedError, match="expired"):
        late.get(timeout=10)
    assert late.state == states.REVOKED
    assert not marker.exists()


def test_a_retry_keeps_the_expiry_of_the_original_message(harness: Harness) -> None:
    harness.start_worker()
    runs = harness.dir / "runs.txt"
    # the retry is due 1.5 s after the first run, after the message expired (1 s after sending)
    result = harness.app.send_task("t.retry_later", (str(runs), 1.5), expires=1.0)
    with pytest.raises(TaskRevokedError, match="expired"):
        result.get(timeout=10)
    assert result.state == states.REVOKED
    assert runs.read_text().splitlines() == ["retries=0"]


# -- 4. dead letters --------------------------------------------------------------------------


def insert_raw_message(db: Path, payload: bytes, queue: str = "celery") -> None:
    """Put bytes in the broker's messages table directly, as a broken producer might."""
    now = time.time()
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        conn.execute(
            "INSERT INTO messages (queue, priority, due_at, payload, exchange, routing_key,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (queue, 0, now, payload, "", queue, now),
        )
        conn.commit()


def test_poison_messages_go_to_the_dead_letters_and_the_worker_goes_on(harness: Harness) -> None:
    worker = harness.start_worker()
    app = harness.app
    unknown = app.send_task("no.such.task", (1,))
    pickled = app.send_task("t.add", (1, 2), serializer="pickle")
    garbage = b"\x00\x01 this is not a message {"
    insert_raw_message(harness.db, garbage)
    wait_until(lambda: len(harness.dead_letters()) >= 3, 10, "three dead letters", 0.05)
    letters = harness.dead_letters()
    assert len(letters) == 3, letters
    by_kind: dict[str, list[str]] = {"unknown": [], "undecodable": [], "content": []}
    for letter in letters:
        assert letter.queue == "celery"
        assert letter.delivery_count == 1
        if "no.such.task" in letter.reason:
            by_kind["unknown"].append(letter.reason)
            assert "unknown task" in letter.reason
            assert unknown.id in letter.reason
        elif "application/x-python-serialize" in letter.reason:
            by_kind["content"].append(letter.reason)
            assert pickled.id in letter.reason
            assert "accept" in letter.reason
        else:
            by_kind["undecodable"].append(letter.reason)
            assert "undecodable" in letter.reason
            assert letter.payload == garbage
    assert {k: len(v) for k, v in by_kind.items()} == {"unknown": 1, "undecodable": 1, "content": 1}
    # none of them ran or was left in the queue, and the worker keeps working
    assert unknown.state == states.PENDING
    assert pickled.state == states.PENDING
    assert harness.queue_size() == 0
    assert worker.running
    assert app.send_task("t.add", (2, 3)).get(timeout=10) == 5
    assert worker.running
    # and the CLI shows them
    shown = harness.run_cli("-A", APP_SPEC, "dlq")
    assert shown.returncode == 0, shown.stderr
    assert "celery: 3 dead letters" in shown.stdout
    assert shown.stdout.count("reason=") == 3
    assert "Traceback" not in shown.stderr


# -- 7. kill -9 -------------------------------------------------------------------------------


def test_acks_late_tasks_survive_kill_9(short_lease: Harness) -> None:
    harness = short_lease
    runs, release = harness.dir / "runs", harness.dir / "release"
    runs.mkdir()
    count = 6
    results = [
        harness.app.send_task("t.late_block", (str(runs), str(release))) for _ in range(count)
    ]
    first = harness.start_worker(concurrency=2)  # window 8: it leases all 6, runs 2
    wait_until(lambda: len(files(runs)) == 2, 10, "two tasks running in the first worker")
    assert harness.queue_size() == 0  # all leased (and the leases renewed) by the first worker
    first.proc.kill()
    assert first.wait_exit(5) == -9
    ran_in_first = {run_of(p) for p in files(runs)}
    assert len(ran_in_first) == 2
    release.touch()
    harness.start_worker(concurrency=2)
    values = [r.get(timeout=30) for r in results]
    assert {r.state for r in results} == {states.SUCCESS}
    # each message was delivered to the dead worker, then once more after its lease expired
    assert [v["delivery_count"] for v in values] == [2] * count
    runs_per_task = Counter(run_of(p) for p in files(runs))
    assert runs_per_task == {r.id: 2 if r.id in ran_in_first else 1 for r in results}
    assert harness.queue_size() == 0


def test_a_long_acks_late_task_keeps_its_lease(short_lease: Harness) -> None:
    """A task running for three lease periods is not handed to a second, idle worker."""
    harness = short_lease
    runs, release = harness.dir / "runs", harness.dir / "release"
    runs.mkdir()
    harness.start_worker(concurrency=1, name="w1@it")
    harness.start_worker(concurrency=1, name="w2@it")
    result = harness.app.send_task("t.late_block", (str(runs), str(release)))
    wait_until(lambda: len(files(runs)) == 1, 10, "the task to start")
    started = time.monotonic()
    # not a synchronisation: the task must run for longer than three 1 s leases
    while time.monotonic() < started + 3.0:
        assert harness.queue_size() == 0  # its lease is renewed: it never looks waiting
        assert len(files(runs)) == 1  # and no other worker started it again
        time.sleep(0.1)
    release.touch()
    assert result.get(timeout=10) == {"delivery_count": 1}
    assert len(files(runs)) == 1
    for worker in harness.workers:
        assert "no longer held" not in worker.stderr(), worker.output()


def run_of(marker: Path) -> str:
    """The task id in a ``run-<task id>-<unique>`` marker's name."""
    return marker.name.removeprefix("run-").rsplit("-", 1)[0]


# -- 8. two workers, one broker ---------------------------------------------------------------


def test_two_workers_run_every_task_exactly_once(harness: Harness) -> None:
    harness.start_worker(name="w1@it")
    harness.start_worker(name="w2@it")
    log = harness.dir / "ran.log"
    count = 1000
    results = harness.app.send_many([("t.record", (str(log),), {}) for _ in range(count)])
    for result in results:
        result.get(timeout=60)
    lines = log.read_text().splitlines()
    ids = Counter(line.split()[0] for line in lines)
    assert len(lines) == count
    assert [i for i, n in ids.items() if n > 1] == []  # none twice
    assert set(ids) == {r.id for r in results}  # none missing, none foreign
    hosts = Counter(line.split()[1] for line in lines)
    assert set(hosts) == {"w1@it", "w2@it"}, hosts  # both took part
    assert harness.queue_size() == 0
