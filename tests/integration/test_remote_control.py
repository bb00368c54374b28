"""Remote control of worker processes on SQLite, Redis and RabbitMQ (issue 15, points 3-6).

Each test has its own namespace on its broker (a database file; a Redis key prefix; a queue
and a revokes stream in the test vhost) and its own control namespace (``control_exchange``),
so tests running at once never hear each other's workers. Workers run ``apps.control_tasks``;
a long task says it started by a file named with its id and runs until the test's release
file appears. What is timed (the ping round trips) is printed, for the record.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apps.control_tasks import BACKEND_ENV, BROKER_ENV, PREFIX_ENV, build_app
from worker_harness import WorkerProcess, child_env, wait_until

import amqp_broker
from celeriac import TaskRevokedError, chain, states
from celeriac.cli.remote import EX_UNAVAILABLE, NO_REPLY
from celeriac.control.calls import call
from celeriac.control.pidbox import ControlRequest, Mailbox
from conftest import delete_redis_keys, require_service

REDIS_URL = "redis://127.0.0.1:6379/0"
WAIT = 20.0
BROKERS = ["sqlite", "redis", "amqp"]
POOLS = ["prefork", "threads", "solo", "asyncio"]
#: What the issue asks of a busy worker's answer to ping.
PING_LIMIT = 0.1


class Ops:
    """One test's broker namespace, its test-side app, and the worker processes it starts."""

    def __init__(self, tmp_path: Path, broker: str) -> None:
        self.dir = tmp_path
        self.kind = broker
        self.prefix = f"ctl{uuid.uuid4().hex[:10]}"
        if broker == "sqlite":
            self.url = f"sqlite:///{tmp_path / 'broker.db'}"
        elif broker == "redis":
            require_service("Redis", 6379)
            self.url = REDIS_URL
        else:
            require_service("RabbitMQ", 5672)
            amqp_broker.ensure_vhost()
            self.url = amqp_broker.URL
        self.backend = f"sqlite:///{tmp_path / 'results.db'}"
        self.started = tmp_path / "started"
        self.started.mkdir()
        self.release = tmp_path / "release"
        self.app = build_app(self.url, self.backend, self.prefix)
        self.workers: list[WorkerProcess] = []
        self.queues: list[str] = [self.prefix]

    def env(self) -> dict[str, str]:
        return child_env({BROKER_ENV: self.url, BACKEND_ENV: self.backend, PREFIX_ENV: self.prefix})

    def start_worker(
        self, name: str, pool: str = "threads", concurrency: int = 2, *extra: str
    ) -> WorkerProcess:
        args = [sys.executable, "-m", "celeriac", "-A", "apps.control_tasks", "worker"]
        args += ["-P", pool, "-c", str(concurrency), "-n", name, "-l", "info", *extra]
        worker = WorkerProcess(args, self.env(), self.dir)
        self.workers.append(worker)
        worker.wait_ready()
        return worker

    def cli(self, *args: str) -> Any:
        import subprocess

        return subprocess.run(
            [sys.executable, "-m", "celeriac", "-A", "apps.control_tasks", *args],
            env=self.env(),
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def queue(self, node: str) -> str:
        """A queue of the test's own for one node."""
        name = f"{self.prefix}.{node.split('@')[0]}"
        self.queues.append(name)
        return name

    def started_ids(self) -> set[str]:
        return {p.name for p in self.started.iterdir()}

    def close(self) -> None:
        try:
            self.release.touch()
            for worker in self.workers:
                worker.send(signal.SIGTERM)
            for worker in self.workers:
                worker.stop()
        finally:
            self.app.control.close()
            self.app.close()
            if self.kind == "redis":
                delete_redis_keys(self.url, self.prefix)
            elif self.kind == "amqp":
                queues = [f"{q}{suffix}" for q in self.queues for suffix in ("", ".dlq")]
                queues.append(f"{self.prefix}.revokes")
                exchanges = [f"{self.prefix}.pidbox", f"reply.{self.prefix}.pidbox"]
                amqp_broker.delete(queues, exchanges)


@pytest.fixture(params=BROKERS)
def ops(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ops]:
    made = Ops(tmp_path, request.param)
    yield made
    made.close()


def nodes(replies: list[dict[str, Any]] | None) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for reply in replies or []:
        merged.update(reply)
    return merged


# -- busy workers answer --------------------------------------------------------------------------
@pytest.mark.parametrize("pool", POOLS)
def test_two_busy_workers_answer_ping_in_time_show_their_tasks_and_terminate(
    ops: Ops, pool: str
) -> None:
    """Both workers run long CPU-bound tasks in every slot; each still answers ``ping`` within
    100 ms, ``inspect active`` lists what it runs, and ``revoke --terminate`` stops a task where
    the pool can (prefork: the child is killed; asyncio: the coroutine is cancelled) and says
    why it cannot where it cannot (a thread)."""
    concurrency = 1 if pool == "solo" else 2
    names = [f"a@{ops.prefix}", f"b@{ops.prefix}"]
    queues = [ops.queue(name) for name in names]  # each its own, so that both get work
    workers = [
        ops.start_worker(name, pool, concurrency, "-Q", queue)
        for name, queue in zip(names, queues, strict=True)
    ]
    task = "c.nap" if pool == "asyncio" else "c.spin"
    results = [
        ops.app.send_task(task, (str(ops.started), str(ops.release)), queue=queue)
        for queue in queues
        for _ in range(concurrency)
    ]
    ids = {r.id for r in results}
    wait_until(lambda: ops.started_ids() == ids, WAIT, "every slot of both workers busy")
    assert all(w.running for w in workers)

    answers, round_trips = asyncio.run(time_pings(ops, names, 7))
    print(f"\n{ops.kind}/{pool}, two busy workers: ping answered in {_ms(answers)}")
    print(f"{ops.kind}/{pool}: app.control.ping() round trip {_ms(round_trips)}")
    assert statistics.median(answers) < PING_LIMIT, _ms(answers)

    active = ops.app.control.inspect(destination=names, timeout=5).active()
    assert set(active) == set(names)
    running = {info["id"]: node for node, infos in active.items() for info in infos}
    assert set(running) == ids
    assert all(len(infos) == concurrency for infos in active.values())
    assert all(info["name"] == task for infos in active.values() for info in infos)

    victim = sorted(running)[0]
    node = running[victim]
    answer = ops.app.control.revoke(
        victim, terminate=True, destination=[node], reply=True, timeout=5
    )
    [reply] = nodes(answer).values()
    if pool in ("prefork", "asyncio"):
        assert reply == {"ok": f"terminate: {victim}"}
        with pytest.raises(TaskRevokedError):
            ops.app.AsyncResult(victim).get(timeout=WAIT)
        others = ids - {victim}
    else:
        assert "cannot stop a task running in a thread" in reply["error"], reply
        others = ids
    ops.release.touch()
    for result in results:
        if result.id in others:
            assert isinstance(result.get(timeout=WAIT), int)


async def time_pings(ops: Ops, names: list[str], rounds: int) -> tuple[list[float], list[float]]:
    """Ping ``names`` ``rounds`` times as ``app.control.ping`` does; returns how long each
    worker took to answer (from the request's publish to its reply's arrival: the worker's
    part) and each whole call (the caller's reply queue declared and deleted included)."""
    transport = ops.app.create_transport()
    await transport.connect()
    sent: list[float] = []
    publish = transport.publish_transient

    async def stamped(*args: Any, **kwargs: Any) -> None:
        sent.append(time.perf_counter())
        await publish(*args, **kwargs)

    transport.publish_transient = stamped  # type: ignore[method-assign]
    answers: list[float] = []
    round_trips: list[float] = []
    try:
        for _ in range(rounds):
            began = time.perf_counter()
            replies = await call(
                transport,
                Mailbox(ops.prefix),
                ControlRequest("ping", destination=names),
                reply=True,
                timeout=5.0,
                limit=len(names),
                callback=lambda _: answers.append(time.perf_counter() - sent[-1]),
            )
            round_trips.append(time.perf_counter() - began)
            assert nodes(replies) == {name: {"ok": "pong"} for name in names}
    finally:
        await transport.close()
    return answers, round_trips


def _ms(timings: list[float]) -> str:
    shown = ", ".join(f"{t * 1000:.1f}" for t in timings)
    median, worst = statistics.median(timings) * 1000, max(timings) * 1000
    return f"median {median:.1f} ms, max {worst:.1f} ms ({shown})"


# -- gathering, status, shutdown ------------------------------------------------------------------
def test_replies_are_gathered_by_destination_and_timeout_and_status_exits_as_celery(
    ops: Ops,
) -> None:
    gone = ops.cli("status", "-t", "0.3")
    assert gone.returncode == EX_UNAVAILABLE, gone.stderr
    assert NO_REPLY in gone.stderr and "Traceback" not in gone.stderr
    names = [f"a@{ops.prefix}", f"b@{ops.prefix}"]
    first, _ = (ops.start_worker(name) for name in names)

    began = time.monotonic()
    both = nodes(ops.app.control.ping(destination=names, timeout=WAIT))
    assert both == {name: {"ok": "pong"} for name in names}
    assert time.monotonic() - began < 2.0  # back once both answered, not after the timeout
    began = time.monotonic()
    one = nodes(ops.app.control.ping(destination=[names[0], "ghost@nowhere"], timeout=0.5))
    assert one == {names[0]: {"ok": "pong"}}
    assert 0.5 <= time.monotonic() - began < 3.0  # waited for the ghost until the timeout
    everyone = ops.app.control.inspect(timeout=0.5).stats()
    assert set(everyone) == set(names) and everyone[names[0]]["broker"]["transport"]

    status = ops.cli("status", "-d", ",".join(names), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == {name: {"ok": "pong"} for name in names}
    text = ops.cli("status")
    assert text.returncode == 0 and "2 nodes online." in text.stdout
    assert ops.cli("status", "-d", "ghost@nowhere", "-t", "0.3").returncode == EX_UNAVAILABLE
    registered = ops.cli("inspect", "registered", "-d", names[1], "--json")
    assert json.loads(registered.stdout)[names[1]] == ["c.add", "c.nap", "c.record", "c.spin"]

    shutdown = ops.cli("control", "shutdown", "-d", names[0])
    assert shutdown.returncode == 0 and f"-> {names[0]}: OK" in shutdown.stdout
    assert first.wait_exit(WAIT) == 0
    assert "Got shutdown from remote" in first.stderr()
    left = ops.cli("status", "-t", "0.5", "--json")
    assert json.loads(left.stdout) == {names[1]: {"ok": "pong"}}


# -- revokes that last ----------------------------------------------------------------------------
def test_revokes_are_honoured_by_a_worker_started_after_them(ops: Ops) -> None:
    """A task id and a whole workflow (by root id) are revoked while no worker runs; the
    messages sent are REVOKED by the worker started later, and by another after a restart;
    everything else runs."""
    runs = ops.dir / "runs"
    task_id, root = str(uuid.uuid4()), str(uuid.uuid4())
    ops.app.control.revoke(task_id)
    ops.app.control.revoke(root, by="root_id")
    lone = ops.app.send_task("c.record", (str(runs),), task_id=task_id)
    record = ops.app.signature("c.record", (str(runs),))
    workflow = chain(record.clone().set(task_id=root), record.clone()).apply_async()
    fine = ops.app.send_task("c.record", (str(runs),))

    first = ops.start_worker(f"late@{ops.prefix}")
    assert fine.get(timeout=WAIT) == fine.id
    for result in (lone, ops.app.AsyncResult(root), workflow):
        with pytest.raises(TaskRevokedError):
            result.get(timeout=WAIT)
    assert runs.read_text().split() == [fine.id]

    first.send(signal.SIGTERM)
    assert first.wait_exit(WAIT) == 0
    again = ops.app.send_task("c.record", (str(runs),), task_id=task_id)  # the same id again
    ops.start_worker(f"later@{ops.prefix}")
    with pytest.raises(TaskRevokedError):
        again.get(timeout=WAIT)
    assert ops.app.send_task("c.add", (1, 2)).get(timeout=WAIT) == 3
    revoked = ops.app.control.inspect(destination=[f"later@{ops.prefix}"], timeout=5).revoked()
    assert task_id in revoked[f"later@{ops.prefix}"]
    assert runs.read_text().split() == [fine.id]
    assert ops.app.AsyncResult(task_id).state == states.REVOKED
    assert os.path.exists(runs)
