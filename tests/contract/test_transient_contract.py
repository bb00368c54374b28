"""Transient fan-out (:meth:`Transport.publish_transient`, :meth:`Transport.listen`): what every
broker promises to events and remote control, run over memory, SQLite, Redis and RabbitMQ.

* a fanout exchange reaches every open listener, a topic one those whose patterns match (AMQP's
  ``*`` one word, ``#`` any), in publish order;
* a message published while nobody listens is gone: a listener opened later never sees it, and
  nothing is kept in the broker for it;
* a listener that falls behind keeps the newest ``buffer`` messages and counts the dropped ones;
* a closed listener leaves nothing behind (Redis: no subscriber and no key; RabbitMQ: no queue,
  as ``rabbitmqctl`` lists them; SQLite: no listener row; memory: no registration);
* a publisher and a listener in two processes hear each other (SQLite, Redis);
* Redis and RabbitMQ listeners survive a lost connection, and their wire layout is kombu's and
  Celery's (channel names, exchange types, queue arguments), checked against a Celery 5.7
  install when one is at hand.

The fixtures are the transport suite's (one private broker namespace per test); each test uses
exchange names of its own, so tests sharing a Redis server or a RabbitMQ vhost never hear each
other. ``test_publish_throughput`` prints a figure per broker (run with ``-s`` to see it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import selectors
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import test_transport_contract as suite
from test_transport_contract import AMQP_URL, AMQP_VHOST, REDIS_URL, TRANSPORTS, Case, run_async

from celeriac.protocol.message import Message
from celeriac.routing import Exchange
from celeriac.transports.base import Listener, Transport

# the transport suite's fixtures, over this module's ``case``
make_transport = suite.make_transport
transport = suite.transport

CELERY_PYTHON = Path(sys.executable)  # Celery 5.7 is a test dependency
Leftovers = Callable[[Transport, str], Awaitable[list[str]]]


@pytest.fixture(params=[pytest.param(n, marks=c.marks) for n, c in TRANSPORTS.items()])
def case(request: pytest.FixtureRequest) -> Case:
    return TRANSPORTS[str(request.param)]


@pytest.fixture
def broker(request: pytest.FixtureRequest, case: Case) -> str:
    """The name of the broker under test (the ``case`` parameter)."""
    return str(request.node.callspec.params["case"])


@pytest.fixture
def names(broker: str) -> Iterator[Callable[[str], str]]:
    """Exchange names private to the test; on RabbitMQ the exchanges are deleted afterwards."""
    made: list[str] = []
    token = uuid.uuid4().hex[:10]

    def name(label: str) -> str:
        made.append(f"tx-{token}-{label}")
        return made[-1]

    yield name
    if broker == "amqp" and made:
        _delete_amqp_exchanges(made)


def message(label: str) -> Message:
    """A small message as events and control requests are: a JSON body, a header or two."""
    return Message(
        headers={"hostname": "w1@test", "label": label},
        body=orjson.dumps({"label": label, "type": "worker-heartbeat"}),
        content_type="application/json",
        content_encoding="utf-8",
    )


def label_of(found: Message | None) -> str | None:
    return None if found is None else str(found.headers["label"])


async def receive(listener: Listener, count: int, timeout: float = 10.0) -> list[str]:
    """The labels of the next ``count`` messages (fails if they do not come in ``timeout``)."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        found = await listener.get(max(deadline - time.monotonic(), 0.0))
        assert found is not None, f"only {got} of {count} messages came in {timeout} s"
        got.append(str(label_of(found)))
    return got


async def until_fence(listener: Listener, fence: str) -> list[str]:
    """The labels received up to the ``fence`` label (excluded)."""
    got: list[str] = []
    while (label := label_of(await listener.get(10.0))) != fence:
        assert label is not None, f"the fence {fence!r} never came; got {got}"
        got.append(label)
    return got


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for ``condition`` (a state another thread or the broker changes), or fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not met in {timeout} s"
        await asyncio.sleep(0.002)


# -- what a closed listener may leave, per broker -----------------------------------------------
async def _memory_leftovers(transport: Transport, exchange: str) -> list[str]:
    from celeriac.transports.memory import MemoryTransport

    assert isinstance(transport, MemoryTransport)
    count = transport.transient_listeners(exchange)
    return [f"{count} listeners registered"] if count else []


async def _sqlite_leftovers(transport: Transport, exchange: str) -> list[str]:
    from celeriac.transports.sqlite import SQLiteTransport

    assert isinstance(transport, SQLiteTransport)
    with contextlib.closing(sqlite3.connect(transport.path)) as conn:
        rows = conn.execute("SELECT id FROM listeners WHERE exchange = ?", (exchange,)).fetchall()
        logged = conn.execute(
            "SELECT count(*) FROM transient WHERE exchange = ?", (exchange,)
        ).fetchone()[0]
    return [f"listener row {r[0]}" for r in rows] + ([f"{logged} log rows"] if logged else [])


async def _redis_leftovers(transport: Transport, exchange: str) -> list[str]:
    import redis.asyncio as aioredis

    from celeriac.transports.redis import RedisTransport

    assert isinstance(transport, RedisTransport)
    client: Any = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"*{exchange}*", count=1000)]
        base = transport.channels.base(exchange)
        # PUBLISH answers how many subscribers (pattern ones included) received it
        heard = [await client.publish(channel, b"") for channel in (base, base + "/any.key")]
    finally:
        await client.aclose()
    return [f"key {k!r}" for k in keys] + ([f"{sum(heard)} subscribers"] if any(heard) else [])


def _rabbitmq_queues() -> list[str]:
    listed = subprocess.run(
        ["rabbitmqctl", "list_queues", "-p", AMQP_VHOST, "--no-table-headers", "-q", "name"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert listed.returncode == 0, listed.stderr
    return listed.stdout.split()


async def _amqp_leftovers(transport: Transport, exchange: str) -> list[str]:
    queues = await asyncio.to_thread(_rabbitmq_queues)
    return [f"queue {q}" for q in queues if q.startswith(exchange + ".")]


LEFTOVERS: dict[str, Leftovers] = {
    "memory": _memory_leftovers,
    "sqlite": _sqlite_leftovers,
    "redis": _redis_leftovers,
    "amqp": _amqp_leftovers,
}


def _delete_amqp_exchanges(exchanges: list[str]) -> None:
    import aio_pika
    from aiormq.exceptions import AMQPError

    async def delete() -> None:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            for exchange in exchanges:
                with contextlib.suppress(AMQPError):
                    channel = await connection.channel()
                    await (await channel.get_underlay_channel()).exchange_delete(exchange)

    suite._in_thread(delete)


# -- delivery -----------------------------------------------------------------------------------
@run_async
async def test_fanout_reaches_every_listener(
    make_transport: suite.MakeTransport, names: Callable[[str], str]
) -> None:
    publisher, other = make_transport(), make_transport()
    pidbox = Exchange(names("pidbox"), "fanout", durable=False)
    elsewhere = Exchange(names("elsewhere"), "fanout", durable=False)
    async with (
        publisher.listen(pidbox, ()) as first,
        other.listen(pidbox, ()) as second,  # another connection (or instance) of the broker
        publisher.listen(pidbox, ("ignored.*",)) as third,  # fanout ignores patterns
        other.listen(elsewhere, ()) as deaf,
    ):
        await publisher.publish_transient(pidbox, "", [message(f"m{i}") for i in range(3)])
        await publisher.publish_transient(pidbox, "any.key", [message("m3"), message("m4")])
        expected = ["m0", "m1", "m2", "m3", "m4"]
        for listener in (first, second, third):
            assert await receive(listener, 5) == expected
        await publisher.publish_transient(elsewhere, "", [message("fence")])
        assert await receive(deaf, 1) == ["fence"]  # it heard nothing of pidbox before
        assert first.dropped == second.dropped == 0


@run_async
async def test_topic_patterns_match_as_in_amqp(
    transport: Transport, names: Callable[[str], str]
) -> None:
    celeryev = Exchange(names("celeryev"), "topic")
    keys = ["task.sent", "task.multi", "task.a.b", "worker", "worker.heartbeat", "workers.x", ""]
    keys += ["worker.a.b", "other"]
    async with (
        transport.listen(celeryev, ("task.*",)) as tasks,
        transport.listen(celeryev, ("worker.#",)) as workers,
        transport.listen(celeryev, ("#",)) as everything,
        transport.listen(celeryev, ("task.*", "#.heartbeat")) as two,
        transport.listen(celeryev, ("task.multi",)) as exact,
    ):
        for key in keys:
            await transport.publish_transient(celeryev, key, [message(key or "(empty)")])
        for fence in ("task.fence", "worker.fence"):
            await transport.publish_transient(celeryev, fence, [message(fence)])
        # each listener reads up to its own fence: publish order is kept per listener
        assert await until_fence(tasks, "task.fence") == ["task.sent", "task.multi"]
        assert await until_fence(workers, "worker.fence") == [
            "worker",
            "worker.heartbeat",
            "worker.a.b",
        ]
        assert await until_fence(everything, "worker.fence") == [
            *[k or "(empty)" for k in keys],
            "task.fence",
        ]
        assert await until_fence(two, "task.fence") == [
            "task.sent",
            "task.multi",
            "worker.heartbeat",
        ]
        await transport.publish_transient(celeryev, "task.multi", [message("last")])
        assert await receive(exact, 2) == ["task.multi", "last"]


@run_async
async def test_a_direct_exchange_reaches_the_listeners_of_its_key(
    transport: Transport, names: Callable[[str], str]
) -> None:
    """Remote-control replies: each client listens to its own key."""
    replies = Exchange(names("reply"), "direct", durable=False)
    async with (
        transport.listen(replies, ("client-a",)) as first,
        transport.listen(replies, ("client-b",)) as second,
        transport.listen(replies, ("client-a", "client-b")) as both,
    ):
        await transport.publish_transient(replies, "client-a", [message("m0"), message("m1")])
        await transport.publish_transient(replies, "client-b", [message("m2")])
        await transport.publish_transient(replies, "client-c", [message("nobody's")])
        await transport.publish_transient(replies, "client-a", [message("fence-a")])
        await transport.publish_transient(replies, "client-b", [message("fence-b")])
        assert await until_fence(first, "fence-a") == ["m0", "m1"]
        assert await until_fence(second, "fence-b") == ["m2"]
        assert await until_fence(both, "fence-b") == ["m0", "m1", "m2", "fence-a"]


@run_async
async def test_what_nobody_hears_is_gone(
    broker: str, transport: Transport, names: Callable[[str], str]
) -> None:
    for exchange, key in (
        (Exchange(names("ev"), "topic"), "task.sent"),
        (Exchange(names("rp"), "direct", False), "c1"),
    ):
        await transport.publish_transient(exchange, key, [message("early"), message("early")])
        # nothing was kept anywhere for a listener that was not there
        assert await LEFTOVERS[broker](transport, exchange.name) == []
        async with transport.listen(exchange, (key,)) as late:
            assert await late.get(timeout=0.05) is None
            await transport.publish_transient(exchange, key, [message("after")])
            assert label_of(await late.get(timeout=10)) == "after"


@run_async
async def test_a_slow_listener_keeps_the_newest_and_counts_the_dropped(
    transport: Transport, names: Callable[[str], str]
) -> None:
    celeryev = Exchange(names("celeryev"), "topic")
    async with transport.listen(celeryev, ("#",), buffer=10) as slow:
        batch = [message(f"m{i}") for i in range(100)]
        await transport.publish_transient(celeryev, "task.multi", batch[:40])
        await transport.publish_transient(celeryev, "task.multi", batch[40:])
        await until(lambda: slow.dropped >= 90)  # the reader side has taken in all 100
        assert await receive(slow, 10) == [f"m{i}" for i in range(90, 100)]
        assert await slow.get(timeout=0) is None
        assert slow.dropped == 90
        # it goes on listening
        await transport.publish_transient(celeryev, "task.multi", [message("more")])
        assert await receive(slow, 1) == ["more"]


@run_async
async def test_closing_a_listener_leaves_nothing(
    broker: str, make_transport: suite.MakeTransport, names: Callable[[str], str]
) -> None:
    transport = make_transport()
    leftovers = LEFTOVERS[broker]
    exchanges = [
        (Exchange(names("ev"), "topic"), "worker.heartbeat"),
        (Exchange(names("box"), "fanout", False), ""),
        (Exchange(names("reply"), "direct", False), "client-a"),
    ]
    for exchange, key in exchanges:
        listener = transport.listen(exchange, (key if exchange.type == "direct" else "#",))
        await listener.open()
        await transport.publish_transient(exchange, key, [message("heard")])
        assert await receive(listener, 1) == ["heard"]
        assert await leftovers(transport, exchange.name) != []  # the check sees an open one
        await listener.close()
        assert await listener.get(timeout=None) is None  # closed: at once, never blocks
        assert await leftovers(transport, exchange.name) == []
        await transport.publish_transient(exchange, key, [message("unheard")])
        assert await leftovers(transport, exchange.name) == []
    # closing the transport closes what it opened
    last = Exchange(names("last"), "fanout", False)
    survivor = transport.listen(last, ())
    await survivor.open()
    await transport.close()
    assert await survivor.get(timeout=None) is None
    assert await leftovers(make_transport(), last.name) == []


@run_async
async def test_listeners_on_two_loops_of_one_transport(
    broker: str, transport: Transport, names: Callable[[str], str]
) -> None:
    """A worker's listener runs on its loop while the app publishes from another thread's."""
    box = Exchange(names("box"), "fanout", durable=False)
    heard: list[str] = []
    ready, done = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    async def listen_elsewhere() -> None:
        async with transport.listen(box, ()) as listener:
            loop.call_soon_threadsafe(ready.set)
            heard.extend(await receive(listener, 3))
        loop.call_soon_threadsafe(done.set)

    thread_error: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(listen_elsewhere())
        except BaseException as exc:
            thread_error.append(exc)
            loop.call_soon_threadsafe(done.set)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await transport.publish_transient(box, "", [message(f"m{i}") for i in range(3)])
        await asyncio.wait_for(done.wait(), 10)
    finally:
        await asyncio.to_thread(thread.join, 10)
    assert not thread_error, thread_error
    assert heard == ["m0", "m1", "m2"]


# -- two processes ------------------------------------------------------------------------------
_CHILD = """
import asyncio, json, sys
from celeriac.routing import Exchange
ARG = json.loads(sys.argv[1])

def make():
    if ARG["broker"] == "sqlite":
        from celeriac.transports.sqlite import SQLiteTransport
        return SQLiteTransport(ARG["url"])
    from celeriac.transports.redis import RedisTransport
    return RedisTransport(ARG["url"])

async def main():
    transport = make()
    exchange = Exchange(ARG["exchange"], "topic")
    got = []
    async with transport.listen(exchange, ["task.*"]) as listener:
        print("ready", flush=True)
        while len(got) < ARG["count"]:
            found = await listener.get(timeout=20)
            if found is None:
                break
            got.append(found.headers["label"])
    await transport.close()
    print(json.dumps(got), flush=True)

asyncio.run(main())
"""


@pytest.mark.parametrize("broker_name", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
@run_async
async def test_a_listener_in_another_process_hears_a_publisher(
    broker_name: str, tmp_path: Path
) -> None:
    made = TRANSPORTS[broker_name].make(tmp_path, f"t{uuid.uuid4().hex[:12]}", {})
    url = made.url
    exchange = Exchange(f"tx-{uuid.uuid4().hex[:10]}-celeryev", "topic")
    arg = {"broker": broker_name, "url": url, "exchange": exchange.name, "count": 50}
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_CHILD), json.dumps(arg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert await asyncio.to_thread(_line_of, child, 20.0) == "ready"
        await made.publish_transient(exchange, "worker.heartbeat", [message("not-for-it")])
        for start in range(0, 50, 10):
            batch = [message(f"m{i}") for i in range(start, start + 10)]
            await made.publish_transient(exchange, "task.succeeded", batch)
        out, err = await asyncio.to_thread(child.communicate, timeout=30)
        assert child.returncode == 0, err[-2000:]
        assert json.loads(out.strip().splitlines()[-1]) == [f"m{i}" for i in range(50)]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
        await made.close()


def _line_of(child: subprocess.Popen[str], timeout: float) -> str:
    """The child's next stdout line, or a failure naming its stderr if it is dead or silent."""
    assert child.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError(f"no line from the child in {timeout} s")
    line = child.stdout.readline().strip()
    if not line and child.poll() is not None:
        assert child.stderr is not None
        raise AssertionError(f"the child died: {child.stderr.read()[-2000:]}")
    return line


# -- throughput ---------------------------------------------------------------------------------
@run_async
async def test_publish_throughput(
    broker: str, transport: Transport, names: Callable[[str], str]
) -> None:
    """10,000 small messages in batches of 500 to one listener: every one arrives, in order.
    The rates are printed for the record (no threshold: the machine is shared)."""
    celeryev = Exchange(names("celeryev"), "topic")
    total, size = 10_000, 500
    batches = [[message(f"m{i}") for i in range(s, s + size)] for s in range(0, total, size)]
    async with transport.listen(celeryev, ("task.#",), buffer=total) as listener:
        started = time.perf_counter()
        for batch in batches:
            await transport.publish_transient(celeryev, "task.multi", batch)
        published = time.perf_counter() - started
        got = await receive(listener, total, timeout=60)
        received = time.perf_counter() - started
    assert got == [f"m{i}" for i in range(total)]
    assert listener.dropped == 0
    print(
        f"\n[transient {broker}] published {total} in {published:.3f} s "
        f"({total / published:,.0f} msgs/s); all received after {received:.3f} s "
        f"({total / received:,.0f} msgs/s end to end)"
    )


# -- Redis: kombu's channels, a lost connection ---------------------------------------------------
@pytest.mark.redis
@run_async
async def test_redis_channels_are_kombus(tmp_path: Path) -> None:
    import redis.asyncio as aioredis

    from celeriac.transports.redis import RedisTransport

    transport = TRANSPORTS["redis"].make(tmp_path, "channels", {})
    exchange = Exchange(f"tx-{uuid.uuid4().hex[:10]}-celeryev", "topic")
    raw: Any = aioredis.Redis.from_url(REDIS_URL, protocol=2)
    pubsub = raw.pubsub()
    try:
        await pubsub.psubscribe(f"/15.{exchange.name}/*")  # as Flower subscribes
        await pubsub.get_message(timeout=5)  # the confirmation
        await transport.publish_transient(exchange, "worker.heartbeat", [message("kombu")])
        found = await pubsub.get_message(ignore_subscribe_messages=True, timeout=10)
        assert found is not None
        assert found["channel"] == f"/15.{exchange.name}/worker.heartbeat".encode()
        envelope = json.loads(found["data"])
        props = envelope["properties"]
        assert props["delivery_info"] == {
            "exchange": exchange.name,
            "routing_key": "worker.heartbeat",
        }
        assert props["body_encoding"] == "base64" and props["delivery_tag"]
        assert envelope["headers"] == {"hostname": "w1@test", "label": "kombu"}
        # kombu's options: global_keyprefix and fanout_prefix name the channels
        prefixed = TRANSPORTS["redis"].make(
            tmp_path, "channels", {"global_keyprefix": "pfx:", "fanout_prefix": "/x{db}."}
        )
        assert isinstance(prefixed, RedisTransport)
        assert prefixed.channels.publish("celeryev", "task.multi") == "pfx:/x15.celeryev/task.multi"
        await prefixed.close()
    finally:
        await pubsub.aclose()
        await raw.aclose()
        await transport.close()


@pytest.mark.redis
@run_async
async def test_a_redis_listener_subscribes_again_after_its_connection_is_killed(
    tmp_path: Path,
) -> None:
    import redis.asyncio as aioredis

    from celeriac.transports.redis.fanout import RedisListener

    transport = TRANSPORTS["redis"].make(tmp_path, "killed", {})
    box = Exchange(f"tx-{uuid.uuid4().hex[:10]}-box", "fanout", durable=False)
    raw: Any = aioredis.Redis.from_url(REDIS_URL)
    try:
        async with transport.listen(box, ()) as listener:
            assert isinstance(listener, RedisListener)
            clients = [c for c in await raw.client_list() if c["name"] == listener.client_name]
            assert len(clients) == 1
            killed = await raw.execute_command("CLIENT", "KILL", "ID", clients[0]["id"])
            assert killed == 1
            await _heard_again(transport, box, listener)
    finally:
        await raw.aclose()
        await transport.close()


async def _heard_again(transport: Transport, exchange: Exchange, listener: Listener) -> None:
    """Publish probes until the listener hears one (it subscribes again on its own)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        await transport.publish_transient(exchange, "", [message("probe")])
        if label_of(await listener.get(timeout=0.05)) == "probe":
            return
    raise AssertionError("the listener never heard anything again")


# -- RabbitMQ: Celery's exchanges and queues, a lost connection -----------------------------------
@pytest.mark.amqp
@run_async
async def test_rabbitmq_declares_celerys_layout(tmp_path: Path) -> None:
    transport = TRANSPORTS["amqp"].make(tmp_path, "layout", {"transient_retention": 5})
    token = uuid.uuid4().hex[:10]
    celeryev = Exchange(f"tx-{token}-celeryev", "topic")
    pidbox = Exchange(f"tx-{token}-pidbox", "fanout", durable=False)
    try:
        async with transport.listen(celeryev, ("#",), buffer=500) as listener:
            await transport.publish_transient(pidbox, "", [message("nobody")])  # declares it
            exchanges = await asyncio.to_thread(
                _rabbitmqctl, "list_exchanges", "name", "type", "durable"
            )
            assert [celeryev.name, "topic", "true"] in exchanges
            assert [pidbox.name, "fanout", "false"] in exchanges
            queues = await asyncio.to_thread(
                _rabbitmqctl,
                "list_queues",
                "name",
                "durable",
                "auto_delete",
                "exclusive",
                "arguments",
            )
            [queue] = [q for q in queues if q[0].startswith(celeryev.name + ".")]
            assert uuid.UUID(queue[0][len(celeryev.name) + 1 :])  # <exchange>.<uuid4>
            assert queue[1:4] == ["false", "true", "true"]
            for argument in ('"x-message-ttl",5000', '"x-max-length",500', '"drop-head"'):
                assert argument in "".join(queue[4:]).replace(" ", ""), queue
            await transport.publish_transient(celeryev, "task.multi", [message("heard")])
            found = await listener.get(timeout=10)
            assert found is not None and label_of(found) == "heard"
            assert found.properties["delivery_mode"] == 1
            assert found.properties["delivery_info"] == {
                "exchange": celeryev.name,
                "routing_key": "task.multi",
            }
    finally:
        await transport.close()
        _delete_amqp_exchanges([celeryev.name, pidbox.name])


def _rabbitmqctl(command: str, *columns: str) -> list[list[str]]:
    listed = subprocess.run(
        ["rabbitmqctl", command, "-p", AMQP_VHOST, "--no-table-headers", "-q", *columns],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert listed.returncode == 0, listed.stderr
    return [line.split("\t") for line in listed.stdout.splitlines() if line.strip()]


@pytest.mark.amqp
@run_async
async def test_a_rabbitmq_listener_listens_again_after_its_connection_closes(
    tmp_path: Path,
) -> None:
    from celeriac.transports.amqp import AMQPTransport

    transport = TRANSPORTS["amqp"].make(tmp_path, "lost", {})
    assert isinstance(transport, AMQPTransport)
    box = Exchange(f"tx-{uuid.uuid4().hex[:10]}-box", "fanout", durable=False)
    try:
        async with transport.listen(box, ()) as listener:
            link = await transport.link()
            await link.connection.close()  # as a broker restart would
            await _heard_again(transport, box, listener)
    finally:
        await transport.close()
        _delete_amqp_exchanges([box.name])


@pytest.mark.amqp
@run_async
async def test_a_rabbitmq_publisher_declares_again_an_exchange_deleted_under_it(
    tmp_path: Path,
) -> None:
    from celeriac.transports.amqp import AMQPTransport

    transport = TRANSPORTS["amqp"].make(tmp_path, "deleted", {})
    assert isinstance(transport, AMQPTransport)
    box = Exchange(f"tx-{uuid.uuid4().hex[:10]}-box", "fanout", durable=False)
    try:
        await transport.publish_transient(box, "", [message("declares")])
        _delete_amqp_exchanges([box.name])
        await transport.publish_transient(box, "", [message("lost")])  # RabbitMQ: 404, closed
        link = await transport.link()
        await until(lambda: link.transient_channel is None or link.transient_channel.is_closed)
        await transport.publish_transient(box, "", [message("declares again")])
        exchanges = await asyncio.to_thread(_rabbitmqctl, "list_exchanges", "name")
        assert [box.name] in exchanges
    finally:
        await transport.close()
        _delete_amqp_exchanges([box.name])


# -- Celery's own clients -------------------------------------------------------------------------
_CELERY_SENDER = """
import sys
from celery import Celery
app = Celery(broker=sys.argv[1])
app.control.broadcast("enable_events")  # a cast on celery.pidbox
with app.events.default_dispatcher(hostname="celery@test") as dispatcher:
    dispatcher.send("worker-heartbeat", freq=2.0)
"""


@pytest.mark.parametrize(
    "broker_name",
    [pytest.param("redis", marks=pytest.mark.redis), pytest.param("amqp", marks=pytest.mark.amqp)],
)
@run_async
async def test_celerys_broadcasts_and_events_reach_a_celeriac_listener(
    broker_name: str, tmp_path: Path
) -> None:
    """Celery 5.7's ``app.control.broadcast`` and event dispatcher, on their real exchanges."""
    transport = TRANSPORTS[broker_name].make(tmp_path, "celery", {})
    url = REDIS_URL if broker_name == "redis" else AMQP_URL
    pidbox = Exchange("celery.pidbox", "fanout", durable=False)  # as Celery declares them
    celeryev = Exchange("celeryev", "topic")
    try:
        async with transport.listen(pidbox, ()) as box, transport.listen(celeryev, ("#",)) as ev:
            sent = await asyncio.to_thread(
                subprocess.run,
                [str(CELERY_PYTHON), "-c", _CELERY_SENDER, url],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp_path,
                env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            )
            assert sent.returncode == 0, sent.stderr[-2000:]
            # other runs on this server may broadcast too: look for ours
            request = await _first(
                box, lambda m: orjson.loads(m.body).get("method") == "enable_events"
            )
            assert orjson.loads(request.body)["arguments"] == {}
            assert set(request.headers) == {"clock", "expires"}
            event = await _first(ev, lambda m: m.headers.get("hostname") == "celery@test")
            assert orjson.loads(event.body)["type"] == "worker-heartbeat"
            assert event.properties["delivery_info"]["routing_key"] == "worker.heartbeat"
    finally:
        await transport.close()  # celeryev and celery.pidbox stay: Celery's names, shared


_KOMBU_REPLIER = """
import json, sys
from kombu import Connection, Consumer, Exchange, Producer, Queue
url, name, ours, theirs = sys.argv[1:5]
exchange = Exchange(name, "direct", durable=False)
got = []
with Connection(url) as conn:
    # as Celery's client declares its reply queue: <oid>.reply.celery.pidbox, bound with <oid>
    queue = Queue(f"{theirs}.{name}", exchange, routing_key=theirs, durable=False, auto_delete=True)
    with Consumer(conn, [queue], callbacks=[lambda body, m: got.append([body, m.headers])],
                  accept=["json"], no_ack=True):
        print("ready", flush=True)
        conn.drain_events(timeout=20)
    # as a Celery worker replies: to the exchange, with the asker's key
    Producer(conn).publish({"celery@test": {"ok": "pong"}}, exchange=exchange, routing_key=ours,
                           headers={"ticket": "t1"}, serializer="json")
    queue.bind(conn.default_channel).delete()
print(json.dumps(got), flush=True)
"""


@pytest.mark.parametrize(
    "broker_name",
    [pytest.param("redis", marks=pytest.mark.redis), pytest.param("amqp", marks=pytest.mark.amqp)],
)
@run_async
async def test_replies_cross_between_kombu_and_celeriac_on_a_direct_exchange(
    broker_name: str, tmp_path: Path
) -> None:
    """kombu 5.7 (Celery's) on one end of ``reply.celery.pidbox``-style routing, celeriac on the
    other: Redis lists and binding sets, RabbitMQ's own direct exchange."""
    transport = TRANSPORTS[broker_name].make(tmp_path, "kombu", {})
    url = REDIS_URL if broker_name == "redis" else AMQP_URL
    replies = Exchange(f"tx-{uuid.uuid4().hex[:10]}-reply", "direct", durable=False)
    ours, theirs = uuid.uuid4().hex, uuid.uuid4().hex
    child = subprocess.Popen(
        [str(CELERY_PYTHON), "-c", _KOMBU_REPLIER, url, replies.name, ours, theirs],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        async with transport.listen(replies, (ours,)) as listener:
            assert await asyncio.to_thread(_line_of, child, 30.0) == "ready"
            request = Message(headers={"ticket": "t0"}, body=orjson.dumps({"method": "ping"}))
            await transport.publish_transient(replies, theirs, [request])
            reply = await listener.get(timeout=20)
            assert reply is not None, "kombu's reply never came"
            assert orjson.loads(reply.body) == {"celery@test": {"ok": "pong"}}
            assert reply.headers["ticket"] == "t1"
        out, err = await asyncio.to_thread(child.communicate, timeout=30)
        assert child.returncode == 0, err[-2000:]
        assert json.loads(out.strip().splitlines()[-1]) == [[{"method": "ping"}, {"ticket": "t0"}]]
        if broker_name == "redis":
            assert await _redis_leftovers(transport, replies.name) == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
        await transport.close()
        if broker_name == "amqp":
            _delete_amqp_exchanges([replies.name])


async def _first(listener: Listener, wanted: Callable[[Message], bool]) -> Message:
    deadline = time.monotonic() + 10
    while (remaining := deadline - time.monotonic()) > 0:
        found = await listener.get(timeout=remaining)
        if found is not None and wanted(found):
            return found
    raise AssertionError("the message never came")
