"""The SQLite broker with real OS processes: competing consumers and a consumer killed by -9;
then the SQLite broker's own promises (URL forms, schema, index use, threads, cancellation).

Each child is ``python -c CONSUMER`` on this interpreter; every child is killed in ``finally`` if
still running, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac.errors import ImproperlyConfigured, TransportError
from celeriac.protocol.message import task_message
from celeriac.routing import Queue
from celeriac.transports.base import Delivery, Outgoing
from celeriac.transports.sqlite import SQLiteTransport, database_path
from celeriac.transports.sqlite import db as schema

# A consumer process. argv: db path, mode ("drain" or "lease-and-hang"), go-file, batch size.
# drain: wait for the go-file, then get/ack until the queue stays empty for a second; print the
# (message id, delivery_count) pairs as JSON. lease-and-hang: lease one batch, say so, and hang.
CONSUMER = """
import asyncio, json, sys, time
from pathlib import Path
from celeriac.transports.sqlite import SQLiteTransport

async def main(db, mode, go, batch):
    transport = SQLiteTransport("sqlite:///" + db, lease_seconds=1.0, poll_interval=0.01)
    await transport.connect()
    print("ready", flush=True)
    while not Path(go).exists():
        time.sleep(0.005)
    if mode == "lease-and-hang":
        got = await transport.get(["q"], batch, timeout=10)
        print(json.dumps([[d.decode().id, d.delivery_count] for d in got]), flush=True)
        time.sleep(600)
    seen = []
    while True:
        got = await transport.get(["q"], batch, timeout=1.0)
        if not got:
            break
        seen.extend([d.decode().id, d.delivery_count] for d in got)
        await transport.ack(got)
    await transport.close()
    print(json.dumps(seen), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""


def publish_items(count: int, prefix: str = "m") -> list[Outgoing]:
    """``count`` messages for queue ``q`` through the default exchange, ids prefix0, prefix1..."""
    return [
        Outgoing(
            task_message(
                task="t",
                task_id=f"{prefix}{i}",
                body=b"[[], {}, {}]",
                content_type="application/json",
                content_encoding="utf-8",
            ),
            "",
            "q",
        )
        for i in range(count)
    ]


def publish(db: Path, count: int) -> list[str]:
    """Publish ``count`` messages to queue ``q`` in batches of 500; return their ids."""
    transport = SQLiteTransport(f"sqlite:///{db}")
    items = publish_items(count)

    async def go() -> None:
        await transport.declare_queue(Queue("q"))
        for start in range(0, count, 500):
            batch = items[start : start + 500]
            assert await transport.publish_batch(batch) == [1] * len(batch)
        await transport.close()

    asyncio.run(go())
    return [item.message.id for item in items]


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    """The child processes of a test, each killed at the end if still alive."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()


def spawn(
    children: list[subprocess.Popen[str]], db: Path, mode: str, go: Path, batch: int
) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", CONSUMER, str(db), mode, str(go), str(batch)],
        stdout=subprocess.PIPE,
        text=True,
    )
    children.append(child)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"  # bounded by the pytest timeout
    return child


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_processes_consume_each_message_exactly_once(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    db, go = tmp_path / "broker.db", tmp_path / "go"
    ids = publish(db, 2000)
    consumers = [spawn(children, db, "drain", go, 10) for _ in range(2)]
    go.touch()  # both are connected and waiting: now they compete
    results = []
    for child in consumers:
        stdout, _ = child.communicate(timeout=90)
        assert child.returncode == 0
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    delivered = Counter(message_id for result in results for message_id, _ in result)
    assert sorted(delivered) == sorted(ids)  # none missing
    assert max(delivered.values()) == 1  # none twice
    assert all(count == 1 for result in results for _, count in result)
    assert all(result for result in results), "both processes should have taken a share"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_leases_of_a_killed_consumer_are_redelivered(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    db, go = tmp_path / "broker.db", tmp_path / "go"
    ids = publish(db, 300)
    doomed = spawn(children, db, "lease-and-hang", go, 100)
    go.touch()
    assert doomed.stdout is not None
    leased = {message_id for message_id, _ in json.loads(doomed.stdout.readline())}
    assert len(leased) == 100
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)

    seen: dict[str, int] = {}

    async def consume() -> None:
        transport = SQLiteTransport(f"sqlite:///{db}", poll_interval=0.01)
        deadline = time.monotonic() + 30
        try:
            while len(seen) < len(ids) and time.monotonic() < deadline:
                got: list[Delivery] = await transport.get(["q"], 50, timeout=2)
                for delivery in got:
                    assert delivery.decode().id not in seen
                    seen[delivery.decode().id] = delivery.delivery_count
                await transport.ack(got)
        finally:
            await transport.close()

    asyncio.run(consume())
    assert sorted(seen) == sorted(ids)  # nothing lost
    assert {i for i, count in seen.items() if count == 2} == leased
    assert all(count == 1 for i, count in seen.items() if i not in leased)


# -- single-process checks of the SQLite broker's own promises ---------------------------------
def test_url_forms_and_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert database_path("sqlite:///rel/x.db") == tmp_path / "rel" / "x.db"
    assert database_path("sqlite:////abs/x.db") == Path("/abs/x.db")
    assert database_path("sqlite://") == tmp_path / "celeriac.db"
    for bad in ("sqlite://host/x.db", "sqlite:///x.db?mode=ro", "sqlite:///:memory:", "x.db"):
        with pytest.raises(ImproperlyConfigured):
            database_path(bad)
    for options in ({"synchronous": "SOMETIMES"}, {"poll_interval": 0}, {"busy_timeout": "x"}):
        with pytest.raises(ImproperlyConfigured):
            SQLiteTransport("sqlite:///x.db", **options)


def test_schema_wal_and_claim_index(tmp_path: Path) -> None:
    db = tmp_path / "deep" / "dir" / "broker.db"  # parent directories are created
    transport = SQLiteTransport(f"sqlite:///{db}", synchronous="full")

    async def go() -> None:
        await transport.connect()
        await transport.connect()  # the schema is created idempotently
        await transport.close()

    asyncio.run(go())
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        for query, args in ((schema.CLAIM_SELECT, ("q", 0.0, 10)), (schema.EARLIEST, ("q",))):
            plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}", args))
            assert "INDEX messages_claim" in plan, plan
            assert "TEMP B-TREE" not in plan, plan  # no sort: the index gives the order
    finally:
        conn.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "broker.db"
    asyncio.run(SQLiteTransport(f"sqlite:///{db}").connect())
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(TransportError, match="schema version 99"):
        asyncio.run(SQLiteTransport(f"sqlite:///{db}").connect())


def test_committed_messages_survive_a_new_instance(tmp_path: Path) -> None:
    ids = publish(tmp_path / "broker.db", 3)

    async def go() -> list[str]:
        transport = SQLiteTransport(f"sqlite:///{tmp_path / 'broker.db'}")
        try:
            return [d.decode().id for d in await transport.get(["q"], 10, timeout=1)]
        finally:
            await transport.close()

    assert asyncio.run(go()) == ids


def test_publish_sync_from_many_threads(tmp_path: Path) -> None:
    transport = SQLiteTransport(f"sqlite:///{tmp_path / 'broker.db'}")
    asyncio.run(transport.declare_queue(Queue("q")))

    def produce(worker: int) -> None:
        for item in publish_items(100, f"w{worker}-"):
            assert transport.publish_sync([item]) == [1]

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    async def check() -> int:
        try:
            return await transport.size("q")
        finally:
            await transport.close()

    assert asyncio.run(check()) == 400


async def claims_queued(transport: SQLiteTransport, count: int, timeout: float = 10.0) -> None:
    """Wait until ``count`` calls wait in the queue of the transport's one SQL thread (which a
    test holds busy): then a cancel lands while the claim is in flight, never before it."""
    deadline = time.monotonic() + timeout
    while (executor := transport._executor) is None or executor._work_queue.qsize() < count:
        assert time.monotonic() < deadline, f"{count} SQL call(s) never queued"
        await asyncio.sleep(0.001)


def test_a_cancelled_get_gives_its_claim_back(tmp_path: Path) -> None:
    publish(tmp_path / "broker.db", 1)
    transport = SQLiteTransport(f"sqlite:///{tmp_path / 'broker.db'}")
    gate = threading.Event()

    async def go() -> Delivery:
        await transport.connect()
        blocker = asyncio.ensure_future(transport._run(gate.wait, 10))  # hold the SQL thread
        getting = asyncio.ensure_future(transport.get(["q"], 1, timeout=10))
        await claims_queued(transport, 1)  # get()'s claim waits behind the blocker
        getting.cancel()
        gate.set()
        await blocker
        with pytest.raises(asyncio.CancelledError):
            await getting
        [again] = await transport.get(["q"], 1, timeout=5)  # requeued, not left leased
        await transport.close()
        return again

    assert asyncio.run(go()).delivery_count == 2


def test_another_connection_s_publish_is_found_by_polling(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    consumer = SQLiteTransport(url, poll_interval=0.05)
    producer = SQLiteTransport(url)  # its own connections: no in-process wake-up reaches consumer
    sent_at: list[float] = []

    async def go() -> list[Delivery]:
        await consumer.declare_queue(Queue("q"))
        waiting = asyncio.ensure_future(consumer.get(["q"], 1, timeout=30))
        await asyncio.sleep(0.3)  # the behaviour: time for the consumer to back off to its cap
        sent_at.append(time.monotonic())
        await asyncio.to_thread(producer.publish_sync, publish_items(1))
        try:
            return await waiting
        finally:
            await consumer.close()
            await producer.close()

    assert len(asyncio.run(go())) == 1
    # found by a poll long before the get's timeout (a generous bound, never a speed check: the
    # machine may be loaded)
    assert time.monotonic() - sent_at[0] < 5
