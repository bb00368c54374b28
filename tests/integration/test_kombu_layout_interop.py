"""Celery 5.7 and celeriac on one Redis in kombu's layout (``broker_transport_options=
{"layout": "kombu"}``): real Celery workers and clients, real celeriac workers and clients.

Each direction of sending (Celery's ``delay``/``apply_async``/``send_task`` to a celeriac
worker; celeriac's to a Celery worker) with args, kwargs, countdown, eta, expires, priority,
retries and a failure, results read back by the sender in Celery's result layout; a Celery
worker and a celeriac worker draining one queue of 2,000 tasks together (runs counted per task
id: none lost, none run twice); a worker killed with SIGKILL mid-run, whose unacked messages
come back after the visibility timeout, restored by a celeriac worker or by a Celery worker.

Broker and results on Redis db 7 under a ``global_keyprefix`` of the test's own; each test
stops every process it starts and deletes its keys. Needs ``celery[redis]==5.7.0`` (a
test-only dependency) and Redis.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from apps.kombu_tasks import BROKER, CELERY_APP, PREFIX_ENV, QUEUE_ENV, VT_ENV, build_app
from worker_harness import WorkerProcess, child_env, start_cli_worker, wait_until

from celeriac import Celeriac
from celeriac.errors import TaskRevokedError
from celeriac.transports.base import Transport
from conftest import delete_redis_keys, require_service

celery = pytest.importorskip("celery", reason="celery[redis]==5.7.0 is a test-only dependency")
from celery import Celery  # type: ignore[import-untyped]  # noqa: E402
from celery.exceptions import TaskRevokedError as CeleryRevoked  # type: ignore[import-untyped]  # noqa: E402

T = TypeVar("T")

pytestmark = [
    pytest.mark.redis,
    # Celery's own Redis backend calls redis-py's deprecated setex
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),
]


@dataclass
class Fleet:
    """One test's names, its celeriac app and Celery client app, and the workers it starts."""

    tmp: Path
    visibility_timeout: float = 3600.0
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    workers: list[WorkerProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.prefix = f"kl-{self.tag}:"
        self.queue = f"klq-{self.tag}"
        self.app: Celeriac = build_app(self.queue, self.prefix, self.visibility_timeout)
        self.celery = Celery("client", broker=BROKER, backend=BROKER, set_as_current=False)
        self.celery.conf.broker_transport_options = {
            "global_keyprefix": self.prefix,
            "visibility_timeout": self.visibility_timeout,
        }
        self.celery.conf.result_backend_transport_options = {"global_keyprefix": self.prefix}
        self.celery.conf.task_default_queue = self.queue
        self.redis = redis.Redis.from_url(BROKER)

    def celery_task(self, name: str) -> Any:
        """The Celery client's task object named ``name`` (its body is never run here)."""

        def body(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("runs on a worker only")

        return self.celery.task(name=name, shared=False)(body)

    def start_celery_worker(self, name: str = "celery") -> WorkerProcess:
        """``celery -A kl_celery_side worker -P solo`` on :attr:`queue`, ready."""
        source = CELERY_APP.format(
            broker=BROKER, queue=self.queue, prefix=self.prefix, vt=self.visibility_timeout
        )
        (self.tmp / "kl_celery_side.py").write_text(source)
        args = [sys.executable, "-m", "celery", "-A", "kl_celery_side", "worker", "-P", "solo"]
        args += ["-n", f"{name}-{self.tag}@%h", "-l", "info", "-Q", self.queue]
        args += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
        worker = WorkerProcess(args, child_env({}), self.tmp)
        self.workers.append(worker)
        worker.wait_for_line(rf"{name}-\S+ ready\.", timeout=30)
        return worker

    def start_celeriac_worker(self, concurrency: int = 2) -> WorkerProcess:
        env = child_env(
            {
                QUEUE_ENV: self.queue,
                PREFIX_ENV: self.prefix,
                VT_ENV: str(self.visibility_timeout),
            }
        )
        worker = start_cli_worker("apps.kombu_tasks", env, self.tmp, concurrency=concurrency)
        self.workers.append(worker)
        return worker

    def with_transport(self, use: Callable[[Transport], Awaitable[T]]) -> T:
        """``use(transport)`` on a fresh transport of the celeriac app, closed afterwards."""

        async def run() -> T:
            transport = self.app.create_transport()
            try:
                return await use(transport)
            finally:
                await transport.close()

        return asyncio.run(run())

    def runs(self, what: str = "runs") -> list[tuple[str, str]]:
        """``(task id, celery or celeriac)`` of every recorded run, in order."""
        entries: list[bytes] = self.redis.lrange(f"{self.prefix}{what}", 0, -1)  # type: ignore[assignment]
        found = [entry.decode().split("|", 1) for entry in entries]
        return [(task_id, who) for task_id, who in found]

    def wait_runs(self, count: int, timeout: float, what: str = "runs") -> None:
        wait_until(
            lambda: self.redis.llen(f"{self.prefix}{what}") >= count,
            timeout,
            f"{count} {what} (have {self.redis.llen(f'{self.prefix}{what}')})\n"
            + "\n".join(w.output()[-3000:] for w in self.workers),
            interval=0.02,
        )

    def close(self) -> None:
        for worker in self.workers:
            if worker.running and "celery" in worker.args[2:4]:
                # a Celery 5.7 solo worker takes ~10 s to exit after its last shutdown step
                worker.send(signal.SIGKILL)
            worker.stop()
        self.app.close()
        self.celery.close()
        self.redis.close()
        delete_redis_keys(BROKER, self.prefix)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    require_service("Redis", 6379)
    made = Fleet(tmp_path)
    yield made
    made.close()


@pytest.fixture
def short_fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A fleet whose visibility timeout is 3 s, so a dead worker's messages come back soon."""
    require_service("Redis", 6379)
    made = Fleet(tmp_path, visibility_timeout=3.0)
    yield made
    made.close()


# -- Celery clients, celeriac workers ---------------------------------------------------------
def test_celery_priorities_are_served_as_kombu_serves_them(fleet: Fleet) -> None:
    """Priority 0 first, then 3-5, then 9 (kombu's steps, lower first), by a celeriac worker."""
    sent = {p: fleet.celery.send_task("kl.record", args=(p,), priority=p).id for p in (9, 0, 5)}
    fleet.start_celeriac_worker(concurrency=1)
    fleet.wait_runs(3, 20)
    order = [task_id for task_id, _ in fleet.runs()]
    assert order == [sent[0], sent[5], sent[9]]


def test_celery_client_tasks_run_on_a_celeriac_worker(fleet: Fleet) -> None:
    """Celery's ``delay``/``apply_async`` on the client's own task objects (the worker's code
    is celeriac's), every option a Celery project uses."""
    fleet.start_celeriac_worker()
    describe, flaky, boom, nobody = (
        fleet.celery_task(name) for name in ("kl.describe", "kl.flaky", "kl.boom", "kl.nobody")
    )
    started = time.time()
    plain = describe.apply_async((1, "a"), {"k": [1, 2]}, priority=5)
    countdown = describe.apply_async(("later",), countdown=1.5)
    eta = datetime.now(UTC) + timedelta(seconds=1)
    at_eta = describe.apply_async(("eta",), eta=eta)
    expires = describe.apply_async(("fresh",), expires=60)
    expired = describe.apply_async(("stale",), expires=datetime.now(UTC) - timedelta(seconds=1))
    retried = flaky.delay()
    failed = boom.delay("no")
    unknown = nobody.delay()

    # the countdown message the worker took before it was due waits on the broker, as a
    # record of kombu's unacked under celeriac's delayed field, not in the worker's memory
    def waiting_on_the_broker() -> bool:
        fields: list[bytes] = fleet.redis.hkeys(f"{fleet.prefix}unacked")  # type: ignore[assignment]
        return any(field.startswith(b"celeriac-due:") for field in fields)

    wait_until(waiting_on_the_broker, 5, "the countdown message back on the broker, delayed")
    got = plain.get(timeout=10)
    assert got["args"] == [1, "a"] and got["kwargs"] == {"k": [1, 2]}
    assert (got["by"], got["priority"], got["retries"]) == ("celeriac", 5, 0)
    assert expires.get(timeout=10)["args"] == ["fresh"]
    late = countdown.get(timeout=10)
    assert late["at"] >= started + 1.5 - 0.05  # waited on the broker, then ran
    assert late["eta"] is not None
    assert at_eta.get(timeout=10)["at"] >= eta.timestamp() - 0.05
    assert retried.get(timeout=10) == {"retries": 1, "by": "celeriac"}
    with pytest.raises(ValueError, match="no"):
        failed.get(timeout=10)
    with pytest.raises(CeleryRevoked):
        expired.get(timeout=10)
    # each ran once (the retried one twice: its first run raised Retry), and only here
    runs = Counter(fleet.runs())
    assert runs[(retried.id, "celeriac")] == 2
    for result in (plain, countdown, at_eta, expires):
        assert runs[(result.id, "celeriac")] == 1
    assert (expired.id, "celeriac") not in runs
    assert all(who == "celeriac" for _, who in runs)
    # a task nobody here knows is dead-lettered, intact, in celeriac's list (kombu has none)
    [letter] = fleet.with_transport(lambda t: t.dead_letters(fleet.queue))
    assert unknown.id.encode() in letter.payload and "unknown task" in letter.reason


# -- celeriac clients, Celery workers ---------------------------------------------------------
def test_celeriac_client_tasks_run_on_a_celery_worker(fleet: Fleet) -> None:
    fleet.start_celery_worker()
    describe, flaky, boom = (fleet.app.tasks[n] for n in ("kl.describe", "kl.flaky", "kl.boom"))
    started = time.time()
    plain = describe.apply_async((1, "a"), {"k": [1, 2]}, priority=5)
    countdown = describe.apply_async(("later",), countdown=1)
    expired = describe.apply_async(("stale",), expires=datetime.now(UTC) - timedelta(seconds=1))
    retried = flaky.delay()
    failed = boom.delay("no")

    got = plain.get(timeout=10)
    assert got["args"] == [1, "a"] and got["kwargs"] == {"k": [1, 2]}
    assert (got["by"], got["priority"], got["retries"]) == ("celery", 5, 0)
    # celeriac's countdown waits in kombu's unacked records; the Celery worker's restore moves
    # it to the list when due (every second here: unacked_restore_interval/throttle)
    late = countdown.get(timeout=15)
    assert late["by"] == "celery"
    assert late["at"] >= started + 1 - 0.05
    assert retried.get(timeout=15) == {"retries": 1, "by": "celery"}
    with pytest.raises(ValueError, match="no"):
        failed.get(timeout=10)
    with pytest.raises(TaskRevokedError):
        expired.get(timeout=10)
    runs = Counter(fleet.runs())
    assert runs[(plain.id, "celery")] == runs[(countdown.id, "celery")] == 1
    assert runs[(retried.id, "celery")] == 2
    assert all(who == "celery" for _, who in runs)


# -- one queue, two kinds of worker -----------------------------------------------------------
def test_a_celery_and_a_celeriac_worker_drain_one_queue(fleet: Fleet) -> None:
    """2,000 tasks, half sent by each kind of client: every one runs exactly once."""
    fleet.start_celery_worker()
    fleet.start_celeriac_worker(concurrency=4)
    from_celeriac = fleet.app.send_many(
        [("kl.record", (i,), {}) for i in range(1000)], ignore_result=True
    )
    from_celery = [
        fleet.celery.send_task("kl.record", args=(i,), ignore_result=True) for i in range(1000)
    ]
    fleet.wait_runs(2000, 90)
    runs = fleet.runs()
    ids = Counter(task_id for task_id, _ in runs)
    sent = {r.id for r in from_celeriac} | {r.id for r in from_celery}
    assert set(ids) == sent  # nothing lost
    assert max(ids.values()) == 1  # nothing run twice
    by = Counter(who for _, who in runs)
    assert by["celery"] > 0 and by["celeriac"] > 0, by
    wait_until(  # everything settled
        lambda: fleet.redis.hlen(f"{fleet.prefix}unacked") == 0, 10, "the workers' acks"
    )


# -- a worker killed mid-run ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("victim", "rescuer"),
    [("celeriac", "celeriac"), ("celeriac", "celery"), ("celery", "celeriac")],
)
def test_a_killed_workers_unacked_messages_come_back(
    short_fleet: Fleet, victim: str, rescuer: str
) -> None:
    """SIGKILL a worker holding acks_late tasks (running and prefetched): after the
    visibility timeout (3 s) the other kind of worker, or a new one of the same kind, restores
    them from kombu's unacked records and runs each exactly once more."""
    fleet = short_fleet
    fleet.redis.set(f"{fleet.prefix}hold", 1)
    start = fleet.start_celeriac_worker if victim == "celeriac" else fleet.start_celery_worker
    held_by = start()
    sent = [fleet.app.send_task("kl.slow", ignore_result=True).id for _ in range(4)]
    # a celeriac worker -c 2 takes all four (its window is 8) and runs two; a Celery solo
    # worker runs one, and fetches nothing more while it runs
    held = 4 if victim == "celeriac" else 1
    fleet.wait_runs(1, 20, what="started")
    wait_until(
        lambda: fleet.redis.hlen(f"{fleet.prefix}unacked") == held,
        10,
        f"the victim to take {held}",
    )
    held_by.send(signal.SIGKILL)
    held_by.wait_exit(10)
    fleet.redis.delete(f"{fleet.prefix}hold")
    assert fleet.redis.hlen(f"{fleet.prefix}unacked") == held  # still recorded, not lost
    taken: list[tuple[bytes, float]] = fleet.redis.zrange(  # type: ignore[assignment]
        f"{fleet.prefix}unacked_index", 0, -1, withscores=True
    )
    visible_from = min(score for _, score in taken) + fleet.visibility_timeout
    if rescuer == "celeriac":
        fleet.start_celeriac_worker()
    else:
        fleet.start_celery_worker(name="rescuer")
    fleet.wait_runs(4, 30)
    assert time.time() >= visible_from  # not restored before their visibility timeout ran out
    runs = Counter(fleet.runs())
    assert {task_id for task_id, _ in runs} == set(sent)
    assert all(who == rescuer and n == 1 for (_, who), n in runs.items()), runs
    wait_until(lambda: fleet.redis.hlen(f"{fleet.prefix}unacked") == 0, 10, "the rescuer's acks")


# -- remote control, unchanged by the layout ---------------------------------------------------
def test_each_side_pings_the_others_worker(fleet: Fleet) -> None:
    """Control requests and replies travel on kombu's channels and lists in both layouts: a
    Celery client's ping reaches a celeriac worker in kombu's layout, and the other way round."""
    fleet.start_celeriac_worker()
    fleet.start_celery_worker()

    def celery_heard() -> bool:
        replies = fleet.celery.control.ping(timeout=1.0)
        return any(name.startswith("celeriac@") for reply in replies for name in reply)

    def celeriac_heard() -> bool:
        replies = fleet.app.control.ping(timeout=1.0)
        return any(name.startswith("celery-") for reply in replies for name in reply)

    wait_until(celery_heard, 20, "a Celery ping answered by the celeriac worker")
    wait_until(celeriac_heard, 20, "a celeriac ping answered by the Celery worker")
