"""Results between Celery 5.7 and celeriac on one Redis, in Celery's layout (``layout="celery"``).

Each side writes with its own code and the other reads with its own ``AsyncResult.get()``:
records stored directly (success, failure with its type and message, revoked, a group), waits
that wake on the other side's PUBLISH, real Celery and celeriac workers running each other's
clients' tasks, and chords whose header and body run on different fleets. Tasks travel over
RabbitMQ (both already share its task message layout), results over Redis db 10 under a key
prefix of the test's own. Needs ``celery[redis]==5.7.0`` (a test-only dependency), Redis and
RabbitMQ; every worker a test starts is stopped by that test.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import redis
from apps.celery_results_tasks import (
    BROKER,
    CELERY_APP,
    PREFIX_ENV,
    QUEUE_ENV,
    RESULTS,
    build_app,
)
from worker_harness import WorkerProcess, child_env, start_cli_worker, wait_until

from celeriac import Celeriac, GroupResult, chord, states
from celeriac.errors import ChordError, TaskRevokedError
from celeriac.results.base import ResultMeta, exception_to_dict
from conftest import delete_redis_keys, require_service

celery = pytest.importorskip("celery", reason="celery[redis]==5.7.0 is a test-only dependency")
from celery import Celery  # type: ignore[import-untyped]  # noqa: E402
from celery import chord as celery_chord  # noqa: E402
from celery.result import GroupResult as CeleryGroupResult  # type: ignore[import-untyped]  # noqa: E402

pytestmark = [
    pytest.mark.redis,
    pytest.mark.amqp,
    # Celery's own Redis backend calls redis-py's deprecated setex
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),
]

AMQP = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass
class Setup:
    """One test's names, its celeriac app and Celery client app, and the workers it starts."""

    tmp: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    workers: list[WorkerProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.prefix = f"celeriac-interop-{self.tag}:"
        self.celery_queue = f"cr-celery-{self.tag}"
        self.celeriac_queue = f"cr-celeriac-{self.tag}"
        self.app: Celeriac = build_app(self.celeriac_queue, self.prefix)
        self.celery = Celery("client", broker=BROKER, backend=RESULTS, set_as_current=False)
        self.celery.conf.result_backend_transport_options = {"global_keyprefix": self.prefix}
        self.celery.conf.result_extended = True

    def start_celery_worker(self) -> WorkerProcess:
        """``celery -A celery_side worker -P solo`` on :attr:`celery_queue`, ready."""
        source = CELERY_APP.format(
            broker=BROKER, results=RESULTS, queue=self.celery_queue, prefix=self.prefix
        )
        (self.tmp / "celery_side.py").write_text(source)
        args = [sys.executable, "-m", "celery", "-A", "celery_side", "worker", "-P", "solo"]
        args += ["-n", f"celery-{self.tag}@%h", "-l", "info"]
        args += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
        worker = WorkerProcess(args, child_env({}), self.tmp)
        self.workers.append(worker)
        worker.wait_for_line(r"celery-\S+ ready\.", timeout=30)
        return worker

    def start_celeriac_worker(self) -> WorkerProcess:
        """``celeriac -A apps.celery_results_tasks worker`` on :attr:`celeriac_queue`, ready."""
        env = child_env({QUEUE_ENV: self.celeriac_queue, PREFIX_ENV: self.prefix})
        worker = start_cli_worker("apps.celery_results_tasks", env, self.tmp)
        self.workers.append(worker)
        return worker

    def sig(self, name: str, *args: Any, queue: str) -> Any:
        """A celeriac signature of one of the shared tasks, routed to ``queue``."""
        return self.app.tasks[name].s(*args).set(queue=queue)

    def celery_sig(self, name: str, *args: Any, queue: str) -> Any:
        return self.celery.signature(name, args=args, queue=queue)

    def close(self) -> None:
        for worker in self.workers:
            if worker.running and "celery" in worker.args[2:4]:
                # a Celery 5.7 solo worker takes ~10 s to exit after its last shutdown step
                worker.send(signal.SIGKILL)
            worker.stop()
        self.app.close()
        self.celery.close()
        delete_redis_keys(RESULTS, self.prefix)
        asyncio.run(_delete_amqp([self.celery_queue, self.celeriac_queue]))


async def _delete_amqp(queues: list[str]) -> None:
    """The test's queues (and dead-letter queues), and the exchanges Celery names after them."""
    connection = await aio_pika.connect(AMQP)
    try:
        channel = await connection.channel()
        for name in queues:
            await channel.queue_delete(name)
            await channel.queue_delete(f"{name}.dlq")
            await channel.exchange_delete(name)
    finally:
        await connection.close()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    require_service("Redis", 6379)
    require_service("RabbitMQ", 5672)
    made = Setup(tmp_path)
    yield made
    made.close()


@pytest.fixture
def admin() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(RESULTS)
    yield client
    client.close()


def new_id() -> str:
    return str(uuid.uuid4())


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``call`` on a thread; its value (or exception) lands in the returned list."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(call())
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def subscribed(admin: redis.Redis, channel: str) -> Callable[[], bool]:
    """Whether someone listens on ``channel`` (a waiter has subscribed)."""
    return lambda: dict(admin.pubsub_numsub(channel)).get(channel.encode(), 0) > 0


# -- records stored by one side, read by the other -----------------------------------------------


def test_celery_reads_what_celeriac_stored(setup: Setup, admin: redis.Redis) -> None:
    backend = setup.app.backend
    assert backend is not None
    ok, bad, revoked = new_id(), new_id(), new_id()
    backend.store(ResultMeta(ok, states.SUCCESS, {"v": [1, 2]}, name="interop.add", worker="w"))
    error = exception_to_dict(ValueError("bad", 42))
    backend.store(ResultMeta(bad, states.FAILURE, error, traceback="Traceback: bad"))
    backend.store(ResultMeta(revoked, states.REVOKED, exception_to_dict(TaskRevokedError("no"))))
    group_id = new_id()
    GroupResult(group_id, [setup.app.AsyncResult(ok)], app=setup.app).save()

    assert admin.exists(f"{setup.prefix}celery-task-meta-{ok}")
    result = setup.celery.AsyncResult(ok)
    assert result.get(timeout=10) == {"v": [1, 2]}
    assert (result.name, result.worker) == ("interop.add", "w")
    assert result.date_done is not None
    with pytest.raises(ValueError) as info:
        setup.celery.AsyncResult(bad).get(timeout=10)
    assert info.value.args == ("bad", 42)
    assert setup.celery.AsyncResult(bad).traceback == "Traceback: bad"
    with pytest.raises(celery.exceptions.TaskRevokedError):
        setup.celery.AsyncResult(revoked).get(timeout=10)
    restored = CeleryGroupResult.restore(group_id, app=setup.celery)
    assert restored is not None
    assert restored.get(timeout=10) == [{"v": [1, 2]}]


def test_celeriac_reads_what_celery_stored(setup: Setup) -> None:
    theirs = setup.celery.backend
    ok, bad, revoked = new_id(), new_id(), new_id()
    theirs.store_result(ok, {"n": 8}, states.SUCCESS)
    theirs.mark_as_failure(bad, KeyError("k"), traceback="Traceback: k")
    theirs.mark_as_revoked(revoked, reason="revoked")
    group = CeleryGroupResult(new_id(), [setup.celery.AsyncResult(ok)])
    group.save()

    assert setup.app.AsyncResult(ok).get(timeout=10) == {"n": 8}
    failed = setup.app.AsyncResult(bad)
    with pytest.raises(KeyError) as info:
        failed.get(timeout=10)
    assert info.value.args == ("k",)
    assert failed.traceback == "Traceback: k"
    with pytest.raises(TaskRevokedError):
        setup.app.AsyncResult(revoked).get(timeout=10)
    restored = GroupResult.restore(group.id, app=setup.app)
    assert restored is not None
    assert restored.get(timeout=10) == [{"n": 8}]


def test_waits_wake_on_the_other_side_s_publish(setup: Setup, admin: redis.Redis) -> None:
    backend = setup.app.backend
    assert backend is not None
    channel = f"{setup.prefix}celery-task-meta-"

    # Celery waits (subscribed to the key), celeriac stores
    task_id = new_id()
    thread, box = in_thread(lambda: setup.celery.AsyncResult(task_id).get(timeout=20))
    wait_until(subscribed(admin, channel + task_id), 10, "Celery's get() to subscribe")
    stored = time.perf_counter()
    backend.store(ResultMeta(task_id, states.SUCCESS, "from celeriac"))
    thread.join(20)
    celery_woke = time.perf_counter() - stored
    assert box == ["from celeriac"]

    # celeriac waits, Celery stores
    task_id = new_id()
    thread, box = in_thread(lambda: setup.app.AsyncResult(task_id).get(timeout=20))
    wait_until(subscribed(admin, channel + task_id), 10, "celeriac's get() to subscribe")
    stored = time.perf_counter()
    setup.celery.backend.store_result(task_id, "from celery", states.SUCCESS)
    thread.join(20)
    celeriac_woke = time.perf_counter() - stored
    assert box == ["from celery"]
    print(f"woken: Celery {celery_woke * 1e3:.2f} ms, celeriac {celeriac_woke * 1e3:.2f} ms")


def test_a_stored_success_is_never_overwritten(setup: Setup) -> None:
    """Celery refuses to overwrite a SUCCESS (a redelivered copy must not undo a result); so
    does this layout, and each side keeps the other's."""
    backend = setup.app.backend
    assert backend is not None
    by_celery, by_celeriac = new_id(), new_id()
    setup.celery.backend.store_result(by_celery, "first", states.SUCCESS)
    backend.store(ResultMeta(by_celery, states.FAILURE, exception_to_dict(ValueError("late"))))
    backend.store(ResultMeta(by_celeriac, states.SUCCESS, "first"))
    setup.celery.backend.mark_as_failure(by_celeriac, ValueError("late"))
    for task_id in (by_celery, by_celeriac):
        assert setup.app.AsyncResult(task_id).get(timeout=5) == "first"
        assert setup.celery.AsyncResult(task_id).get(timeout=5) == "first"


# -- real workers ---------------------------------------------------------------------------------


def test_a_celery_worker_s_results_are_read_by_celeriac(setup: Setup) -> None:
    setup.start_celery_worker()
    queue = setup.celery_queue
    ok = setup.sig("interop.add", 2, 3, queue=queue).delay()
    bad = setup.sig("interop.boom", "bad", queue=queue).delay()
    assert ok.get(timeout=20) == {"sum": 5, "by": "celery"}
    with pytest.raises(ValueError) as info:
        bad.get(timeout=20)
    assert info.value.args == ("bad", 42)
    assert "ValueError" in (bad.traceback or "")
    backend = setup.app.backend
    assert backend is not None
    meta = backend.get_meta(ok.id)  # result_extended on the Celery side
    assert (meta.name, meta.args, meta.queue) == ("interop.add", [2, 3], queue)
    assert meta.worker is not None and meta.worker.startswith(f"celery-{setup.tag}@")


def test_a_celeriac_worker_s_results_are_read_by_celery(setup: Setup) -> None:
    setup.start_celeriac_worker()
    queue = setup.celeriac_queue
    ok = setup.celery.send_task("interop.add", (2, 3), queue=queue)
    bad = setup.celery.send_task("interop.boom", ("bad",), queue=queue)
    assert ok.get(timeout=20) == {"sum": 5, "by": "celeriac"}
    with pytest.raises(ValueError) as info:
        bad.get(timeout=20)
    assert info.value.args == ("bad", 42)
    assert "ValueError" in (bad.traceback or "")
    assert (ok.name, ok.args, ok.queue) == ("interop.add", [2, 3], queue)


def test_chords_across_the_two_fleets(setup: Setup) -> None:
    """A chord's header on one fleet and its body on the other, sent by either client: the
    member that completes the chord (a Celery or a celeriac worker) sends the body with the
    header's results in header order, and both clients read the outcome."""
    setup.start_celery_worker()
    setup.start_celeriac_worker()
    on_celery, on_celeriac = setup.celery_queue, setup.celeriac_queue

    def header(queues: list[str]) -> list[Any]:
        return [setup.sig("interop.add", i, i, queue=q) for i, q in enumerate(queues)]

    cases = {
        "celery header, celeriac body": ([on_celery] * 3, on_celeriac),
        "celeriac header, celery body": ([on_celeriac] * 3, on_celery),
        "mixed header, celeriac body": ([on_celery, on_celeriac] * 2, on_celeriac),
        "mixed header, celery body": ([on_celeriac, on_celery] * 2, on_celery),
    }
    for what, (queues, body_queue) in cases.items():
        result = chord(header(queues), setup.sig("interop.tsum", queue=body_queue))()
        got = result.get(timeout=20)
        expected_from = ["celery" if q == on_celery else "celeriac" for q in queues]
        body_by = "celery" if body_queue == on_celery else "celeriac"
        assert got == {
            "sums": [2 * i for i in range(len(queues))],
            "from": expected_from,
            "by": body_by,
        }, what
        assert setup.celery.AsyncResult(result.id).get(timeout=5) == got, what

    # sent by Celery's client: Celery's workers join, a celeriac worker runs the body
    members = [setup.celery_sig("interop.add", i, i, queue=on_celery) for i in range(3)]
    body = setup.celery_sig("interop.tsum", queue=on_celeriac)
    sent = celery_chord(members, body).apply_async()
    assert sent.get(timeout=20) == {"sums": [0, 2, 4], "from": ["celery"] * 3, "by": "celeriac"}
    assert setup.app.AsyncResult(sent.id).get(timeout=5)["by"] == "celeriac"


@pytest.mark.parametrize("header_on", ["celeriac", "celery"])
def test_a_failed_member_fails_the_body_for_both_clients(setup: Setup, header_on: str) -> None:
    """The fleet that runs the header completes the chord; the other one's body never runs,
    and both clients read the body's ChordError, naming the member's error."""
    setup.start_celery_worker()
    setup.start_celeriac_worker()
    here, there = setup.celeriac_queue, setup.celery_queue
    if header_on == "celery":
        here, there = there, here
    members = [
        setup.sig("interop.add", 1, 1, queue=here),
        setup.sig("interop.boom", "no", queue=here),
    ]
    result = chord(members, setup.sig("interop.tsum", queue=there))()
    with pytest.raises(ValueError, match="no"):  # the member's own error first, as in Celery
        result.get(timeout=20)
    with pytest.raises(ChordError, match="ValueError"):
        setup.app.AsyncResult(result.id).get(timeout=5)
    with pytest.raises(celery.exceptions.ChordError, match="ValueError"):
        setup.celery.AsyncResult(result.id).get(timeout=5)


def test_a_chord_celery_sent_completes_on_a_celeriac_worker(setup: Setup) -> None:
    setup.start_celeriac_worker()
    members = [setup.celery_sig("interop.add", i, i, queue=setup.celeriac_queue) for i in range(3)]
    body = setup.celery_sig("interop.tsum", queue=setup.celeriac_queue)
    sent = celery_chord(members, body).apply_async()
    for member in sent.parent.results:
        assert member.get(timeout=20)["by"] == "celeriac"
    # every member joined: the body, if sent at all, is on its way
    assert sent.get(timeout=3) == {"sums": [0, 2, 4], "from": ["celeriac"] * 3, "by": "celeriac"}
