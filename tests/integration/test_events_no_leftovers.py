"""A worker's events never leave anything in the broker for listeners that are not there
(celery#5079: orphaned ``celeryev`` lists filling Redis).

A worker with ``-E`` runs tasks while nobody listens, then while a listener reads its events,
then after the listener has gone; its events add nothing to the broker for nobody. Redis: no key
but the queue's own and the broker's, the same keys before and after. RabbitMQ: no ``celeryev``
queue. SQLite: no ``celeryev`` listener row and no event row while nobody listened, and after
the listener left not one row more than it left behind (the broker's retention removes those).
Meanwhile the worker's own count says it published every event.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from event_collector import Collector
from events_brokers import REDIS_URL, Broker, open_broker
from worker_harness import start_cli_worker, wait_until

import amqp_broker
from celeriac import Celeriac

TASKS = 40


@pytest.fixture(params=["sqlite", "redis", "amqp"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    with open_broker(request.param, tmp_path) as found:
        yield found


def event_state(broker: Broker) -> list[str]:
    """What the broker holds for events and their listeners (names), or its keys (Redis)."""
    if broker.name == "redis":
        client = redis.Redis.from_url(REDIS_URL)
        try:
            # the task queue's own keys come and go with its messages: the rest must not change
            found = (k.decode() for k in client.scan_iter(match=f"{broker.prefix}*"))
            keys = sorted(k for k in found if f":q:{broker.queue}" not in k)
            strays = [k.decode() for k in client.scan_iter(match="*celeryev*")]
        finally:
            client.close()
        return keys + [f"stray {k}" for k in strays]
    if broker.name == "amqp":
        names = amqp_broker.rabbitmqctl("list_queues", "-q", "-p", amqp_broker.VHOST, "name")
        return [n for n in names.split() if n.startswith("celeryev")]
    assert broker.path is not None
    with sqlite3.connect(broker.path) as db:
        listeners = db.execute(
            "SELECT COUNT(*) FROM listeners WHERE exchange = 'celeryev'"
        ).fetchone()[0]
        rows = db.execute("SELECT COUNT(*) FROM transient WHERE exchange = 'celeryev'").fetchone()
    return [f"{listeners} listeners"] * bool(listeners) + [f"{rows[0]} event rows"] * bool(rows[0])


def rows_of(state: list[str]) -> int:
    return sum(int(item.split()[0]) for item in state if item.endswith("event rows"))


def run_tasks(app: Celeriac, broker: Broker, count: int) -> set[str]:
    """Send ``count`` tasks and wait until the worker has taken them all; their ids."""
    ids = {app.send_task("ev.add", (n, 1)).id for n in range(count)}

    async def size() -> int:
        transport = app.create_transport()
        await transport.connect()
        try:
            return await transport.size(broker.queue)
        finally:
            await transport.close()

    wait_until(lambda: asyncio.run(size()) == 0, 20, "the worker to take every task")
    return ids


def test_events_leave_nothing_in_the_broker_with_or_without_listeners(
    broker: Broker, tmp_path: Path
) -> None:
    app = broker.app()
    hostname = f"ev{uuid.uuid4().hex[:6]}@itest"
    worker = start_cli_worker("apps.events_tasks", broker.env(), tmp_path, "-E", "-n", hostname)
    try:
        run_tasks(app, broker, TASKS)  # nobody listens
        before = event_state(broker)
        if broker.name != "redis":
            assert before == []

        collector = Collector(app.create_transport())
        try:
            ids = run_tasks(app, broker, TASKS)
            collector.wait_for(
                "the listener's share of the events",
                lambda events: ids <= {e["uuid"] for e in events if e["type"] == "task-succeeded"},
            )
        finally:
            collector.close()

        left = event_state(broker)  # SQLite: the rows the listener read, until retention
        assert not any("listeners" in k for k in left)
        run_tasks(app, broker, TASKS)  # the listener has gone
        worker.send(signal.SIGTERM)
        assert worker.wait_exit(15) == 0
        after = event_state(broker)
        if broker.name == "sqlite":  # rows may only have gone (retention), never come
            assert rows_of(after) <= rows_of(left), after
        else:
            assert after == left == before, "the worker's events left state in the broker"
        assert not any("stray" in k or "celeryev" in k for k in after)
        sent = re.search(r"events: (\d+) sent .*, (\d+) dropped", worker.stderr())
        assert sent is not None, worker.output()
        # published all along (a warm stop returns what was fetched and not started yet)
        assert int(sent.group(1)) >= 2 * 3 * TASKS
        assert int(sent.group(2)) == 0
    finally:
        worker.stop()
        app.close()
