"""Remote control against real workers in this process, on the memory broker: every inspect and
control command's reply, replies gathered until each destination answered, revokes kept for a
worker that starts later, revokes of whole workflows. (The same against worker processes on
SQLite, Redis and RabbitMQ: tests/integration/test_remote_control.py.)"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celeriac, TaskRevokedError, chain, states
from celeriac.protocol.keys import generate_key_pem
from celeriac.testing import memory_app, worker_thread

WAIT = 10.0
FLOWER_STATS_KEYS = {
    "total",
    "pid",
    "clock",
    "uptime",
    "pool",
    "broker",
    "prefetch_count",
    "rusage",
}


@pytest.fixture
def ops() -> Iterator[Celeriac]:
    # a real private key (so its requests and replies are signed), never shown by inspect conf
    key, _ = generate_key_pem()
    app = memory_app(f"ops-{uuid.uuid4().hex[:8]}", security_key=key.decode())
    yield app
    app.control.close()
    app.close()


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def only(replies: list[dict[str, Any]] | None) -> Any:
    """The one reply of a call made to one worker."""
    assert replies is not None and len(replies) == 1, replies
    [(_, reply)] = replies[0].items()
    return reply


def test_inspect_reports_a_running_and_a_held_task_in_celerys_shapes(ops: Celeriac) -> None:
    release = threading.Event()

    @ops.task(name="ops.block", rate_limit="5/s")
    def block(x: int) -> int:
        release.wait(WAIT)
        return x

    with worker_thread(ops, hostname="w1@h", concurrency=1, prefetch_multiplier=2) as worker:
        running, held = block.delay(1), block.delay(2)
        wait_for(lambda: running.id in worker.state.active, "the first task to start")
        wait_for(lambda: worker.consumer is not None and len(worker.consumer.inflight) == 2, "both")
        inspect = ops.control.inspect(destination=["w1@h"], timeout=WAIT)
        [active] = inspect.active()["w1@h"]
        assert active["id"] == running.id and active["name"] == "ops.block"
        assert active["args"] == [1] and active["acknowledged"] is True
        assert active["hostname"] == "w1@h" and active["time_start"] <= time.time()
        assert set(active["delivery_info"]) == {
            "exchange",
            "routing_key",
            "priority",
            "redelivered",
        }
        assert inspect.active(safe=True)["w1@h"][0]["args"] == "(1,)"
        [reserved] = inspect.reserved()["w1@h"]
        assert reserved["id"] == held.id and reserved["args"] == [2]
        assert inspect.scheduled() == {"w1@h": []}  # delays wait on the broker, not here
        found = inspect.query_task([running.id, held.id, "nope"])["w1@h"]
        assert found[running.id][0] == "active" and found[held.id][0] == "reserved"
        assert inspect.registered()["w1@h"] == ["ops.block [rate_limit=5/s]"]
        stats = inspect.stats()["w1@h"]
        assert set(stats) >= FLOWER_STATS_KEYS
        assert isinstance(stats["clock"], str) and stats["total"] == {"ops.block": 1}
        assert stats["pool"]["max-concurrency"] == 1 and stats["broker"]["transport"] == "memory"
        assert "autoscaler" not in stats
        [queue] = inspect.active_queues()["w1@h"]
        assert queue["name"] == "celery" and queue["exchange"]["type"] == "direct"
        conf = inspect.conf()["w1@h"]
        assert conf["security_key"] == "********"
        assert "task_serializer" not in conf and "task_serializer" in inspect.conf(True)["w1@h"]
        assert inspect.ping() == {"w1@h": {"ok": "pong"}}
        assert ops.control.inspect(destination="w1@h", timeout=WAIT).ping() == {"ok": "pong"}
        release.set()
        assert (running.get(timeout=WAIT), held.get(timeout=WAIT)) == (1, 2)


def test_replies_are_gathered_until_each_destination_answered_or_the_timeout(
    ops: Celeriac,
) -> None:
    with worker_thread(ops, hostname="w1@h"), worker_thread(ops, hostname="w2@h"):
        started = time.monotonic()
        replies = ops.control.ping(destination=["w1@h", "w2@h"], timeout=WAIT)
        assert time.monotonic() - started < WAIT / 2  # it did not wait for the timeout
        assert sorted(next(iter(r)) for r in replies) == ["w1@h", "w2@h"]
        started = time.monotonic()
        everyone = ops.control.inspect(timeout=0.5).ping()  # no destination: the timeout
        assert 0.5 <= time.monotonic() - started < 2.0
        assert everyone == {"w1@h": {"ok": "pong"}, "w2@h": {"ok": "pong"}}
        assert ops.control.inspect(pattern="w2*", matcher="glob", timeout=0.3).ping() == {
            "w2@h": {"ok": "pong"}
        }
        assert ops.control.ping(destination=["nobody@h"], timeout=0.2) == []
        assert ops.control.inspect(destination=["nobody@h"], timeout=0.2).stats() is None
        # a cast returns at once, and nothing
        assert ops.control.rate_limit("x", "1/s") is None


def test_control_commands_reply_as_celery(ops: Celeriac) -> None:
    @ops.task(name="ops.add")
    def add(x: int, y: int) -> int:
        return x + y

    def ask(command: str, **arguments: Any) -> Any:
        return only(ops.control.broadcast(command, arguments, ["w1@h"], reply=True, timeout=WAIT))

    with worker_thread(ops, hostname="w1@h", concurrency=2) as worker:
        assert worker.pool is not None and worker.consumer is not None
        assert ask("rate_limit", task_name="ops.add", rate_limit="10/m") == {
            "ok": "new rate limit set successfully"
        }
        assert worker.consumer.rate_limiter.rate("ops.add") == pytest.approx(10 / 60)
        assert ask("rate_limit", task_name="ops.add", rate_limit=None) == {
            "ok": "rate limit disabled successfully"
        }
        assert ask("rate_limit", task_name="nope", rate_limit="1/s") == {"error": "unknown task"}
        assert (
            "Invalid rate limit" in ask("rate_limit", task_name="ops.add", rate_limit="x")["error"]
        )
        assert ask("time_limit", task_name="ops.add", soft=1, hard=2) == {
            "ok": "time limits set successfully"
        }
        assert (add.options["soft_time_limit"], add.options["time_limit"]) == (1.0, 2.0)
        assert ask("pool_grow", n=2) == {"ok": "pool will grow"} and worker.pool.concurrency == 4
        assert ask("pool_shrink") == {"ok": "pool will shrink"} and worker.pool.concurrency == 3
        assert "cannot shrink" in ask("pool_shrink", n=3)["error"]
        assert "not enabled" in ask("autoscale", max=4, min=1)["error"]
        assert ask("add_consumer", queue="extra") == {"ok": "add consumer extra"}
        assert worker.consumer.queue_names == ["celery", "extra"]
        assert add.apply_async((1, 1), queue="extra").get(timeout=WAIT) == 2
        assert ask("cancel_consumer", queue="extra") == {"ok": "no longer consuming from extra"}
        assert worker.consumer.queue_names == ["celery"]
        assert "only queue" in ask("cancel_consumer", queue="celery")["error"]
        assert ask("disable_events") == {"ok": "task events already disabled"}
        assert ask("enable_events") == {"ok": "task events enabled"}
        assert ask("enable_events") == {"ok": "task events already enabled"}
        assert ask("disable_events") == {"ok": "task events disabled"}
        assert ask("heartbeat") is None
        assert ask("clock")["clock"] > 0
        assert ask("no_such_command") == {"error": "unknown command 'no_such_command'"}
        assert ask("shutdown") == {"ok": "shutting down"}
        wait_for(lambda: not worker.ready.is_set(), "the worker to stop")


def test_the_solo_pool_says_it_cannot_grow_and_autoscale_moves_its_range(ops: Celeriac) -> None:
    with worker_thread(ops, hostname="solo@h", pool="solo"):
        reply = only(ops.control.pool_grow(destination=["solo@h"], reply=True, timeout=WAIT))
        assert reply == {"error": "the solo pool runs one task at a time: it cannot grow"}
    with worker_thread(ops, hostname="auto@h", autoscale=(4, 1)) as worker:
        reply = only(ops.control.autoscale(6, 2, destination=["auto@h"], reply=True, timeout=WAIT))
        assert reply == {"ok": "autoscale now max=6 min=2"} and worker.autoscale == (6, 2)
        grow = only(ops.control.pool_grow(destination=["auto@h"], reply=True, timeout=WAIT))
        assert "not supported with autoscale" in grow["error"]
        stats = ops.control.inspect(destination=["auto@h"], timeout=WAIT).stats()["auto@h"]
        assert stats["autoscaler"]["max"] == 6 and stats["autoscaler"]["min"] == 2


def test_a_revoke_is_honoured_by_a_worker_started_after_it(ops: Celeriac) -> None:
    ran: list[int] = []

    @ops.task(name="ops.record")
    def record(x: int) -> None:
        ran.append(x)

    task_id = str(uuid.uuid4())
    assert ops.control.revoke(task_id) is None  # no worker runs: kept on the broker
    result = record.apply_async((1,), task_id=task_id)
    with worker_thread(ops, hostname="late@h") as worker:
        with pytest.raises(TaskRevokedError):
            result.get(timeout=WAIT)
        assert task_id in worker.state.revoked
        assert ops.control.inspect(destination=["late@h"], timeout=WAIT).revoked() == {
            "late@h": [task_id]
        }
        assert record.delay(2).get(timeout=WAIT) is None
    assert ran == [2]


def test_a_revoke_by_root_id_cancels_the_rest_of_a_workflow(ops: Celeriac) -> None:
    release = threading.Event()
    ran: list[str] = []

    @ops.task(name="ops.first")
    def first() -> int:
        ran.append("first")
        release.wait(WAIT)
        return 1

    @ops.task(name="ops.then")
    def then(x: int) -> int:
        ran.append("then")
        return x + 1

    with worker_thread(ops, hostname="w1@h") as worker:
        workflow = chain(first.s(), then.s(), then.s()).apply_async()
        middle = workflow.parent
        assert middle is not None and middle.parent is not None
        root = middle.parent
        wait_for(lambda: root.id in worker.state.active, "the first task to start")
        replies = ops.control.revoke(root.id, by="root_id", reply=True, limit=1, timeout=WAIT)
        assert only(replies) == {"ok": f"tasks of root_id {{'{root.id}'}} flagged as revoked"}
        assert worker.state.revoked.is_revoked("any", root.id)
        release.set()
        assert root.get(timeout=WAIT) == 1  # already running: not terminated, it finishes
        with pytest.raises(TaskRevokedError):
            middle.get(timeout=WAIT)
    assert ran == ["first"]
    assert middle.state == states.REVOKED


def test_terminate_stops_an_async_task_and_a_thread_says_it_cannot(ops: Celeriac) -> None:
    started = threading.Event()
    release = threading.Event()

    @ops.task(name="ops.sleepy")
    async def sleepy() -> None:
        started.set()
        await asyncio.sleep(WAIT)

    @ops.task(name="ops.busy")
    def busy() -> None:
        started.set()
        release.wait(WAIT)

    with worker_thread(ops, hostname="aio@h", pool="asyncio"):
        result = sleepy.delay()
        assert started.wait(WAIT)
        reply = only(ops.control.terminate(result.id, destination=["aio@h"], reply=True))
        assert reply == {"ok": f"terminate: {result.id}"}
        with pytest.raises(TaskRevokedError):
            result.get(timeout=WAIT)
    started.clear()
    with worker_thread(ops, hostname="thr@h", pool="threads") as worker:
        result = busy.delay()
        assert started.wait(WAIT)
        reply = only(ops.control.terminate(result.id, destination=["thr@h"], reply=True))
        assert "cannot stop a task running in a thread" in reply["error"]
        assert result.id in worker.state.revoked
        release.set()
        result.get(timeout=WAIT, propagate=False)
        unknown = ops.control.revoke("nope", terminate=True, destination=["thr@h"], reply=True)
        assert only(unknown) == {"ok": "terminate: tasks unknown"}


def test_a_worker_without_remote_control_does_not_answer() -> None:
    app = memory_app("quiet", worker_enable_remote_control=False)
    try:
        with worker_thread(app, hostname="quiet@h") as worker:
            assert "control" not in [c.name for c in worker.components]
            assert app.control.ping(destination=["quiet@h"], timeout=0.2) == []
    finally:
        app.control.close()
        app.close()
