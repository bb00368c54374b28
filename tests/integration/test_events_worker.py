"""Events from real workers on every broker, in Celery's format (``celery-wire.md`` section 5).

A worker started with ``-E`` runs one task of each ending while a listener records every message
on the ``celeryev`` exchange: each task's events come in order (received, started, then
succeeded / failed / retried / rejected; an expired one only revoked) with exactly Celery's
fields; the worker says online, beats every 2 s and says offline as it stops; task events travel
in ``task.multi`` batches (a JSON list), worker events one per message under their own key, every
message carrying the ``hostname`` header. SQLite, Redis and RabbitMQ run real worker processes
(threads and prefork pools); the memory broker runs a worker in a thread.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apps.events_tasks import build_app
from event_collector import Collector, Event
from events_brokers import Broker, open_broker
from worker_harness import WorkerProcess, start_cli_worker

from celeriac import Celeriac
from celeriac.testing import worker_thread

#: Celery's fields per event type (celery-wire.md section 5), envelope included.
ENVELOPE = {"hostname", "utcoffset", "pid", "clock", "timestamp", "type"}
WORKER_FIELDS = ENVELOPE | {
    "freq", "active", "processed", "loadavg", "sw_ident", "sw_ver", "sw_sys",
}  # fmt: skip
TASK_FIELDS = {
    "task-received": {
        "uuid", "name", "args", "kwargs", "root_id", "parent_id", "retries", "eta", "expires",
    },
    "task-started": {"uuid"},
    "task-succeeded": {"uuid", "result", "runtime"},
    "task-failed": {"uuid", "exception", "traceback"},
    "task-retried": {"uuid", "exception", "traceback"},
    "task-rejected": {"uuid", "requeue"},
    "task-revoked": {"uuid", "terminated", "signum", "expired"},
}  # fmt: skip


@pytest.fixture
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    with open_broker(request.param, tmp_path) as found:
        yield found


def send_one_of_each(app: Celeriac) -> dict[str, str]:
    """One task of each ending; their ids by ending."""
    past = datetime.now(UTC) - timedelta(seconds=5)
    return {
        "succeeded": app.send_task("ev.add", (2, 3)).id,
        "failed": app.send_task("ev.boom").id,
        "retried": app.send_task("ev.retry_once").id,
        "rejected": app.send_task("ev.refuse").id,
        "revoked": app.send_task("ev.add", (1, 1), expires=past).id,
    }


EXPECTED = {
    "succeeded": ["task-received", "task-started", "task-succeeded"],
    "failed": ["task-received", "task-started", "task-failed"],
    "retried": [
        "task-received", "task-started", "task-retried",
        "task-received", "task-started", "task-succeeded",
    ],
    "rejected": ["task-received", "task-started", "task-rejected"],
    "revoked": ["task-revoked"],
}  # fmt: skip


def types_of(events: list[Event], task_id: str) -> list[str]:
    return [e["type"] for e in events if e.get("uuid") == task_id]


def all_ended(ids: dict[str, str]) -> Callable[[list[Event]], bool]:
    def check(events: list[Event]) -> bool:
        return all(types_of(events, ids[k]) == EXPECTED[k] for k in ids)

    return check


def check_events(collector: Collector, hostname: str, ids: dict[str, str], pool: str) -> None:
    """What every broker and pool must show (see the module docstring)."""
    events = collector.events(hostname)
    for ending, task_id in ids.items():
        assert types_of(events, task_id) == EXPECTED[ending], ending
    for event in events:
        expected = (
            WORKER_FIELDS
            if event["type"].startswith("worker-")
            else (ENVELOPE | TASK_FIELDS[event["type"]])
        )
        assert set(event) == expected, event
        assert isinstance(event["clock"], int) and isinstance(event["pid"], int)
    clocks = [e["clock"] for e in events]
    assert clocks == sorted(clocks) and len(set(clocks)) == len(clocks), "a Lamport clock"

    def one(ending: str, type_: str) -> Event:
        return [e for e in events if e.get("uuid") == ids[ending] and e["type"] == type_][-1]

    received = one("succeeded", "task-received")
    assert received["name"] == "ev.add" and received["args"] == "(2, 3)"
    assert received["kwargs"] == "{}" and received["retries"] == 0
    assert received["root_id"] == ids["succeeded"] and received["parent_id"] is None
    succeeded = one("succeeded", "task-succeeded")
    assert isinstance(succeeded["runtime"], float) and succeeded["runtime"] >= 0
    assert succeeded["result"] == "5"  # a prefork child hands its result's repr back
    failed = one("failed", "task-failed")
    assert failed["exception"] == "ValueError('bad', 42)"
    assert "ValueError" in failed["traceback"]
    assert one("retried", "task-received")["retries"] == 1
    assert one("rejected", "task-rejected")["requeue"] is False
    revoked = one("revoked", "task-revoked")
    assert (revoked["expired"], revoked["terminated"], revoked["signum"]) == (True, False, None)
    online = [e for e in events if e["type"] == "worker-online"]
    assert len(online) == 1 and online[0]["sw_ident"] == "py-celeriac"
    assert online[0]["freq"] == 2.0 and len(online[0]["loadavg"]) == 3
    # the wire: task events in task.multi lists, worker events alone under their own key
    for message in collector.messages:
        if message.hostname != hostname:
            continue
        kinds = {e["type"].split("-")[0] for e in message.events}
        if kinds == {"task"}:
            assert message.routing_key == "task.multi" and message.is_list
        else:
            assert kinds == {"worker"} and not message.is_list
            assert message.routing_key == message.events[0]["type"].replace("-", ".")


def run_worker_scenario(
    app: Celeriac, collector: Collector, hostname: str, stop: Callable[[], None]
) -> dict[str, str]:
    """The worker runs: online, one task of each ending, a heartbeat, then ``stop`` and offline."""
    collector.wait_for(
        "worker-online",
        lambda es: any(e["type"] == "worker-online" and e["hostname"] == hostname for e in es),
    )
    ids = send_one_of_each(app)
    collector.wait_for("every task's events", all_ended(ids))
    collector.wait_for(
        "a heartbeat",
        lambda es: any(e["type"] == "worker-heartbeat" and e["hostname"] == hostname for e in es),
        timeout=5,
    )
    stop()
    collector.wait_for(
        "worker-offline",
        lambda es: any(e["type"] == "worker-offline" and e["hostname"] == hostname for e in es),
    )
    return ids


@pytest.mark.parametrize(
    ("broker", "pool"),
    [
        ("sqlite", "threads"),
        ("sqlite", "prefork"),
        ("redis", "threads"),
        ("redis", "prefork"),
        ("amqp", "threads"),
    ],
    indirect=["broker"],
)
def test_a_worker_sends_celerys_events_for_each_ending_in_order(
    broker: Broker, tmp_path: Path, pool: str
) -> None:
    app = broker.app()
    collector = Collector(app.create_transport())
    hostname = f"ev{uuid.uuid4().hex[:6]}@itest"
    worker: WorkerProcess | None = None
    try:
        worker = start_cli_worker(
            "apps.events_tasks", broker.env(), tmp_path, "-E", "-n", hostname, pool=pool
        )
        running = worker

        def stop() -> None:
            running.send(signal.SIGTERM)
            assert running.wait_exit(15) == 0

        ids = run_worker_scenario(app, collector, hostname, stop)
        check_events(collector, hostname, ids, pool)
        beats = [e for e in collector.events(hostname) if e["type"] == "worker-heartbeat"]
        assert beats[0]["processed"] >= 0 and beats[0]["active"] >= 0
        offline = collector.events(hostname)[-1]
        assert offline["type"] == "worker-offline" and offline["processed"] == 5  # 5 runs
    finally:
        collector.close()
        if worker is not None:
            worker.stop()
        app.close()


def test_a_worker_in_a_thread_on_the_memory_broker_sends_the_same(tmp_path: Path) -> None:
    app = build_app(f"memory://{uuid.uuid4().hex}", {}, "celery")
    collector = Collector(app.create_transport())
    try:
        with worker_thread(app, send_task_events=True, hostname="mem@itest") as worker:
            ids = run_worker_scenario(app, collector, worker.hostname, worker.stop)
        check_events(collector, "mem@itest", ids, "threads")
    finally:
        collector.close()
        app.close()
