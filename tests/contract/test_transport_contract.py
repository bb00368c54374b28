"""One conformance suite for every transport: what :mod:`celeriac.transports.base` promises.

Every test takes the ``transport`` fixture (or ``make_transport`` for a second consumer or
other options) and runs once per entry of :data:`TRANSPORTS`.

How a transport joins (Redis, AMQP...): add one :class:`Case` to ``TRANSPORTS`` with

* ``make(tmp_path, name, options)``: a new, unconnected transport on a broker namespace private
  to the test (a key prefix, a vhost, a database file), called once per instance: two calls
  with the same ``name`` must reach the *same* broker, so two consumers can compete;
* ``inject_raw(transport, queue, payload)``: store bytes that no ``Message`` could produce (a
  poison message), through a test-only path of the broker itself;
* ``marks``: e.g. ``(pytest.mark.redis,)``, so runs without that server deselect it; the
  ``make`` function calls ``require_service`` (a skip when the server is unreachable, a failure
  under ``CELERIAC_REQUIRE_SERVICES=1``);
* what the broker cannot do by nature, each with the reason in :data:`TRANSPORTS`:
  ``leases`` (False: a delivery is held until settled or its connection closes, so lease expiry
  and the tests built on it do not apply), ``counts_copies`` (False: a publish says routed or
  not, not to how many queues), ``counts_delayed`` (False: delayed messages wait outside their
  queue, so ``size`` and ``purge`` do not see them).

Tests are plain functions run by :func:`run_async` (no pytest-asyncio): each one is a fresh
event loop, which is also how a worker process uses a transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec

import pytest

import amqp_broker  # tests/amqp_broker.py
from celeriac.errors import DecodeError, TransportError
from celeriac.protocol.message import Message
from celeriac.routing import Binding, Exchange, Queue
from celeriac.transports.base import Delivery, Outgoing, Transport
from celeriac.transports.memory import MemoryTransport, reset_memory_brokers
from celeriac.transports.sqlite import SQLiteTransport
from conftest import json_task_message

P = ParamSpec("P")
MakeTransport = Callable[..., Transport]


# -- the transports under test -----------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """How to build one transport for the suite (see the module docstring)."""

    make: Callable[[Path, str, dict[str, Any]], Transport]
    inject_raw: Callable[[Transport, str, bytes], None]
    marks: tuple[pytest.MarkDecorator, ...] = ()
    cleanup: Callable[[str], None] | None = None  # called with the test's name afterwards
    leases: bool = True
    counts_copies: bool = True
    counts_delayed: bool = True

    def reached(self, queues: int) -> int:
        """What ``publish`` returns for a message that reached ``queues`` queues."""
        return queues if self.counts_copies else min(queues, 1)

    def waiting(self, ready: int, delayed: int) -> int:
        """What ``size`` says of a queue with ``ready`` messages and ``delayed`` ones."""
        return ready + (delayed if self.counts_delayed else 0)

    def need_leases(self) -> None:
        if not self.leases:
            pytest.skip("no leases on this broker: a delivery is held until settled")


def _make_memory(tmp_path: Path, name: str, options: dict[str, Any]) -> Transport:
    return MemoryTransport(f"memory://{name}", **options)


def _inject_memory(transport: Transport, queue: str, payload: bytes) -> None:
    assert isinstance(transport, MemoryTransport)
    transport.put_raw(queue, payload)


def _make_sqlite(tmp_path: Path, name: str, options: dict[str, Any]) -> Transport:
    return SQLiteTransport(f"sqlite:///{tmp_path / name}.db", **options)


def _inject_sqlite(transport: Transport, queue: str, payload: bytes) -> None:
    assert isinstance(transport, SQLiteTransport)
    with sqlite3.connect(transport.path) as conn:  # a foreign writer, as another process is
        conn.execute(
            "INSERT INTO messages (queue, priority, due_at, payload, exchange, routing_key,"
            " created_at) VALUES (?, 0, ?, ?, '', ?, ?)",
            (queue, time.time(), payload, queue, time.time()),
        )
    conn.close()


REDIS_URL = "redis://127.0.0.1:6379/15"


def _redis_prefix(name: str) -> str:
    return f"celeriac-test:{name}:"


def _make_redis(tmp_path: Path, name: str, options: dict[str, Any]) -> Transport:
    from celeriac.transports.redis import RedisTransport
    from conftest import require_service

    require_service("Redis", 6379)
    return RedisTransport(REDIS_URL, key_prefix=_redis_prefix(name), **options)


def _inject_redis(transport: Transport, queue: str, payload: bytes) -> None:
    from celeriac.transports.redis import RedisTransport

    assert isinstance(transport, RedisTransport)
    transport.put_raw(queue, payload)


def _cleanup_redis(name: str) -> None:
    """Delete every key under the test's prefix (SCAN, never KEYS)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{_redis_prefix(name)}*", count=1000))
        if keys:
            client.delete(*keys)
    except redis.ConnectionError:
        pass  # the server went away: nothing to clean
    finally:
        client.close()


# RabbitMQ: one vhost for the test session (rabbitmqctl costs about a second a call, too much
# per test), and each test deletes what its transports declared.
AMQP_VHOST = amqp_broker.VHOST  # one per xdist worker
AMQP_URL = f"amqp://guest:guest@127.0.0.1:5672/{AMQP_VHOST}"
_amqp_made: dict[str, list[Transport]] = {}
_amqp_vhost_ready: list[bool] = []


def _ensure_amqp_vhost() -> None:
    if _amqp_vhost_ready:
        return
    amqp_broker.ensure_vhost()  # rabbitmqctl: fails, not skips, where services are required
    _amqp_vhost_ready.append(True)


def _make_amqp(tmp_path: Path, name: str, options: dict[str, Any]) -> Transport:
    from celeriac.transports.amqp import AMQPTransport
    from conftest import require_service

    require_service("RabbitMQ", 5672)
    _ensure_amqp_vhost()
    transport = AMQPTransport(AMQP_URL, **options)
    _amqp_made.setdefault(name, []).append(transport)
    return transport


def _in_thread(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine on a loop of its own (the caller may be inside a running loop)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(coro())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    if errors:
        raise errors[0]


def _inject_amqp(transport: Transport, queue: str, payload: bytes) -> None:
    import aio_pika

    async def publish() -> None:  # a foreign client: raw bytes, no headers at all
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            await channel.default_exchange.publish(aio_pika.Message(payload), routing_key=queue)

    _in_thread(publish)


def _cleanup_amqp(name: str) -> None:
    """Delete the queues and exchanges the test's transports declared (delay ones included)."""
    import aio_pika
    from aiormq.exceptions import AMQPError

    from celeriac.transports.amqp import AMQPTransport

    queues: set[str] = set()
    exchanges: set[str] = set()
    for transport in _amqp_made.pop(name, []):
        assert isinstance(transport, AMQPTransport)
        more_queues, more_exchanges = transport.declared_names()
        queues |= more_queues
        exchanges |= more_exchanges

    async def delete() -> None:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            for queue in sorted(queues):
                with contextlib.suppress(AMQPError):
                    channel = await connection.channel()
                    await (await channel.get_underlay_channel()).queue_delete(queue)
            for exchange in sorted(exchanges):
                with contextlib.suppress(AMQPError):
                    channel = await connection.channel()
                    await (await channel.get_underlay_channel()).exchange_delete(exchange)

    if queues or exchanges:
        _in_thread(delete)


TRANSPORTS: dict[str, Case] = {
    "memory": Case(_make_memory, _inject_memory),
    "sqlite": Case(_make_sqlite, _inject_sqlite),
    "redis": Case(_make_redis, _inject_redis, (pytest.mark.redis,), _cleanup_redis),
    # RabbitMQ: no leases (a delivery is held until settled or its channel closes; a dead
    # worker's deliveries come back at once), no copy counts (publisher confirms say routed or
    # returned only), delayed messages wait in delay queues, outside their target queue.
    "amqp": Case(
        _make_amqp,
        _inject_amqp,
        (pytest.mark.amqp,),
        _cleanup_amqp,
        leases=False,
        counts_copies=False,
        counts_delayed=False,
    ),
}


@pytest.fixture(params=[pytest.param(name, marks=c.marks) for name, c in TRANSPORTS.items()])
def case(request: pytest.FixtureRequest) -> Case:
    return TRANSPORTS[str(request.param)]


@pytest.fixture
def make_transport(case: Case, tmp_path: Path) -> Iterator[MakeTransport]:
    """A factory of transports on this test's private broker; all are closed afterwards."""
    name = f"t{uuid.uuid4().hex[:12]}"
    made: list[Transport] = []

    def make(**options: Any) -> Transport:
        transport = case.make(tmp_path, name, options)
        made.append(transport)
        return transport

    yield make

    async def close_all() -> None:
        for transport in made:
            await transport.close()

    asyncio.run(close_all())
    reset_memory_brokers()
    if case.cleanup is not None and made:
        case.cleanup(name)


@pytest.fixture
def transport(make_transport: MakeTransport) -> Transport:
    return make_transport()


@pytest.fixture
def inject_raw(case: Case) -> Callable[[Transport, str, bytes], None]:
    return case.inject_raw


def run_async(fn: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an ``async def`` test on a fresh event loop; fixtures are passed through."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), timeout=30))

    return wrapper


# -- helpers -----------------------------------------------------------------------------------
def message(label: str, priority: int | None = None) -> Message:
    return json_task_message(label, "tests.contract", priority=priority)


def out(
    label: str,
    routing_key: str = "q",
    exchange: str = "",
    priority: int | None = None,
    due_at: float | None = None,
) -> Outgoing:
    return Outgoing(message(label, priority), exchange, routing_key, due_at)


def labels(deliveries: list[Delivery]) -> list[str]:
    return [d.decode().id.split("-")[0] for d in deliveries]


async def drain(transport: Transport, queue: str = "q", count: int = 1000) -> list[Delivery]:
    """Everything deliverable now, without waiting."""
    return await transport.get([queue], count, timeout=0)


# -- topology ----------------------------------------------------------------------------------
@run_async
async def test_declarations_are_idempotent(transport: Transport) -> None:
    orders = Exchange("orders", "direct")
    queue = Queue("q", exchange=orders, routing_key="new")
    for _ in range(2):
        await transport.declare_exchange(orders)
        await transport.declare_queue(queue)
        await transport.bind(Binding("orders", "q", "new"))
    assert await transport.publish(out("a", "new", "orders")) == 1
    assert await transport.size("q") == 1


@run_async
async def test_publish_get_ack(transport: Transport) -> None:
    await transport.declare_queue(Queue("q"))
    item = out("a")
    assert await transport.publish(item) == 1
    [delivery] = await transport.get(["q"], 10, timeout=1)
    assert delivery.queue == "q"
    assert delivery.delivery_count == 1
    assert not delivery.redelivered
    # the same message, not the same bytes: RabbitMQ sorts the keys of a headers table
    assert Message.from_wire(delivery.payload) == item.message
    assert delivery.decode().id == item.message.id
    await transport.ack([delivery])
    assert await transport.size("q") == 0
    assert await drain(transport) == []


@run_async
async def test_direct_exchange(transport: Transport) -> None:
    await transport.declare_queue(Queue("a", exchange=Exchange("d"), routing_key="ka"))
    await transport.declare_queue(Queue("b", exchange=Exchange("d"), routing_key="kb"))
    assert await transport.publish_batch([out("x", "ka", "d"), out("y", "zz", "d")]) == [1, 0]
    assert labels(await drain(transport, "a")) == ["x"]
    assert await drain(transport, "b") == []


@run_async
async def test_topic_exchange_reaches_two_queues_or_none(transport: Transport, case: Case) -> None:
    topic = Exchange("events", "topic")
    await transport.declare_queue(Queue("eu", exchange=topic, routing_key="orders.*.eu"))
    await transport.declare_queue(Queue("all", exchange=topic, routing_key="orders.#"))
    assert await transport.publish(out("x", "orders.new.eu", "events")) == case.reached(2)
    assert await transport.publish(out("y", "shipping.new.eu", "events")) == 0
    assert labels(await drain(transport, "eu")) == ["x"]
    assert labels(await drain(transport, "all")) == ["x"]


@run_async
async def test_fanout_exchange(transport: Transport, case: Case) -> None:
    bus = Exchange("bus", "fanout")
    for name in ("w1", "w2", "w3"):
        await transport.declare_queue(Queue(name, exchange=bus))
    assert await transport.publish(out("x", "whatever", "bus")) == case.reached(3)
    for name in ("w1", "w2", "w3"):
        assert labels(await drain(transport, name)) == ["x"]


def headed(label: str, due_at: float | None = None, **headers: Any) -> Outgoing:
    """A message to the ``by-kind`` headers exchange with these task headers (``headers=``)."""
    sent = json_task_message(label, "tests.contract", headers=headers)
    return Outgoing(sent, "by-kind", "ignored", due_at)


@run_async
async def test_headers_exchange_routes_on_message_headers(transport: Transport, case: Case) -> None:
    by_kind = Exchange("by-kind", "headers")
    pdf_eu = {"x-match": "all", "kind": "pdf", "region": "eu"}
    await transport.declare_queue(Queue("all", exchange=by_kind, binding_arguments=pdf_eu))
    pdf_or_eu = {"x-match": "any", "kind": "pdf", "region": "eu"}
    await transport.declare_queue(Queue("any", exchange=by_kind, binding_arguments=pdf_or_eu))
    await transport.declare_queue(Queue("one", exchange=by_kind, binding_arguments={"n": 1}))
    counts = await transport.publish_batch(
        [
            headed("both", kind="pdf", region="eu"),
            headed("kind", kind="pdf", region="us"),
            headed("region", region="eu"),
            headed("neither", kind="txt", region="us"),
            headed("bare"),
            # RabbitMQ compares types: neither True nor "1" is 1
            headed("int", n=1),
            headed("bool", n=True),
            headed("str", n="1"),
        ]
    )
    assert counts == [case.reached(2), case.reached(1), case.reached(1), 0, 0, 1, 0, 0]
    assert labels(await drain(transport, "all")) == ["both"]
    assert sorted(labels(await drain(transport, "any"))) == ["both", "kind", "region"]
    assert labels(await drain(transport, "one")) == ["int"]

    # a binding with arguments is bound and unbound as itself (same key, other arguments)
    doc = Binding("by-kind", "all", "", {"kind": "doc"})
    await transport.bind(doc)
    assert await transport.publish(headed("doc", kind="doc")) == 1
    await transport.unbind(doc)
    assert await transport.publish(headed("doc2", kind="doc")) == 0
    assert await transport.publish(headed("both2", kind="pdf", region="eu")) == case.reached(2)
    assert labels(await drain(transport, "all")) == ["doc", "both2"]

    # a delayed message is routed by its headers too (on RabbitMQ, after its delay queue)
    await drain(transport, "any")
    late = headed("late", time.time() + 0.3, kind="pdf", region="eu")
    assert await transport.publish(late) == case.reached(2)
    deadline = time.monotonic() + 10
    arrived: list[Delivery] = []
    while not arrived and time.monotonic() < deadline:
        arrived = await transport.get(["all"], 10, timeout=1)
    assert labels(arrived) == ["late"]


@run_async
async def test_default_exchange_routes_by_queue_name(transport: Transport) -> None:
    await transport.declare_queue(Queue("q"))
    assert await transport.publish_batch([out("a", "q"), out("b", "nowhere")]) == [1, 0]
    assert labels(await drain(transport)) == ["a"]


@run_async
async def test_unknown_exchange_refuses_the_whole_batch(transport: Transport) -> None:
    await transport.declare_queue(Queue("q"))
    with pytest.raises(TransportError, match="nowhere"):
        await transport.publish_batch([out("a", "q"), out("b", "q", "nowhere")])
    assert await transport.size("q") == 0


@run_async
async def test_exchange_type_conflict_is_refused(transport: Transport) -> None:
    await transport.declare_exchange(Exchange("x", "direct"))
    with pytest.raises(TransportError, match="x"):
        await transport.declare_exchange(Exchange("x", "fanout"))


@run_async
async def test_bind_and_unbind(transport: Transport) -> None:
    await transport.declare_exchange(Exchange("d"))
    await transport.declare_queue(Queue("q"))
    await transport.bind(Binding("d", "q", "k"))
    assert await transport.publish(out("a", "k", "d")) == 1
    await transport.unbind(Binding("d", "q", "k"))
    await transport.unbind(Binding("d", "q", "k"))  # absent: no error
    assert await transport.publish(out("b", "k", "d")) == 0


@run_async
async def test_publish_batch_counts_per_item(transport: Transport, case: Case) -> None:
    bus = Exchange("bus", "fanout")
    await transport.declare_queue(Queue("q"))
    await transport.declare_queue(Queue("r", exchange=bus))
    await transport.declare_queue(Queue("s", exchange=bus))
    items = [out("a", "q"), out("b", "none"), out("c", "", "bus"), out("d", "q")]
    assert await transport.publish_batch(items) == [1, 0, case.reached(2), 1]
    assert await transport.publish_batch([]) == []
    assert transport.publish_sync([out("e", "q")]) == [1]
    assert await transport.size("q") == 3


@run_async
async def test_delete_queue(transport: Transport) -> None:
    await transport.declare_queue(Queue("q", exchange=Exchange("d"), routing_key="k"))
    await transport.publish(out("a", "k", "d"))
    await transport.delete_queue("q")
    await transport.delete_queue("q")  # absent: no error
    assert await transport.size("q") == 0
    assert await transport.publish(out("b", "k", "d")) == 0
    assert await transport.publish(out("c", "q")) == 0


@run_async
async def test_auto_delete_queue_goes_with_its_consumer(make_transport: MakeTransport) -> None:
    consumer, producer = make_transport(), make_transport()
    await consumer.declare_queue(Queue("broadcast", auto_delete=True))
    assert await producer.publish(out("a", "broadcast")) == 1
    await consumer.close()
    assert await producer.publish(out("b", "broadcast")) == 0


# -- ordering and delays -----------------------------------------------------------------------
@run_async
async def test_priorities_higher_first_fifo_within(transport: Transport) -> None:
    await transport.declare_queue(Queue("q"))
    spec = [("a", 0), ("b", 9), ("c", 5), ("d", 9), ("e", 0), ("f", None)]
    await transport.publish_batch([out(label, priority=p) for label, p in spec])
    assert labels(await drain(transport)) == ["b", "d", "c", "a", "e", "f"]


@run_async
async def test_priorities_one_at_a_time(transport: Transport) -> None:
    await transport.declare_queue(Queue("q"))
    for label, p in [("a", 1), ("b", 7), ("c", 7), ("d", 3)]:
        await transport.publish(out(label, priority=p))
    got = [labels(await transport.get(["q"], 1, timeout=0))[0] for _ in range(4)]
    assert got == ["b", "c", "d", "a"]


@run_async
async def test_max_priority_clamps(transport: Transport) -> None:
    await transport.declare_queue(Queue("q", max_priority=3))
    spec = [("x", 9), ("y", 3), ("z", 0), ("w", 5)]
    await transport.publish_batch([out(label, priority=p) for label, p in spec])
    assert labels(await drain(transport)) == ["x", "y", "w", "z"]


@run_async
async def test_due_at_hides_until_due(transport: Transport, case: Case) -> None:
    await transport.declare_queue(Queue("q"))
    now = time.time()
    await transport.publish_batch([out("later", due_at=now + 3600), out("past", due_at=now - 60)])
    assert labels(await drain(transport)) == ["past"]
    assert await transport.size("q") == case.waiting(0, 1)  # the delayed one waits


@run_async
async def test_message_becomes_due(transport: Transport) -> None:
    await transport.declare_queue(Queue("q"))
    due = time.time() + 0.3
    await transport.publish(out("soon", due_at=due))
    assert await transport.get(["q"], 1, timeout=0.05) == []
    got = await transport.get(["q"], 1, timeout=10)
    assert labels(got) == ["soon"]
    assert time.time() >= due - 0.01


# -- leases ------------------------------------------------------------------------------------
@run_async
async def test_lease_expiry_redelivers(make_transport: MakeTransport, case: Case) -> None:
    case.need_leases()
    transport = make_transport(lease_seconds=0.1)
    await transport.declare_queue(Queue("q"))
    await transport.publish(out("a"))
    [first] = await transport.get(["q"], 1, timeout=1)
    assert await transport.get(["q"], 1, timeout=0) == []  # leased: invisible
    [second] = await transport.get(["q"], 1, timeout=10)
    assert second.delivery_count == 2
    assert second.redelivered
    assert second.decode().id == first.decode().id
    await transport.ack([second])
    assert await transport.size("q") == 0


@run_async
async def test_extend_keeps_the_lease(make_transport: MakeTransport) -> None:
    transport = make_transport(lease_seconds=0.2)
    await transport.declare_queue(Queue("q"))
    await transport.publish(out("a"))
    held = await transport.get(["q"], 1, timeout=1)
    await transport.extend(held, 60)
    assert await transport.get(["q"], 1, timeout=0.5) == []
    assert await transport.size("q") == 0
    await transport.ack(held)


@run_async
async def test_stale_ack_does_not_touch_the_new_lease(
    make_transport: MakeTransport, caplog: pytest.LogCaptureFixture, case: Case
) -> None:
    case.need_leases()
    slow = make_transport(lease_seconds=0.1)
    other = make_transport(lease_seconds=60)
    await slow.declare_queue(Queue("q"))
    await slow.publish(out("a"))
    stale = await slow.get(["q"], 1, timeout=1)
    fresh = await other.get(["q"], 1, timeout=10)  # after slow's lease expired
    assert fresh[0].delivery_count == 2
    with caplog.at_level(logging.WARNING, logger="celeriac.transports"):
        await slow.ack(stale)
        await slow.extend(stale)
        await slow.reject(stale, "stale")
    assert any("no longer held" in r.getMessage() for r in caplog.records)
    assert await slow.dead_letters("q") == []
    await other.requeue(fresh)  # still other's: it goes back, not lost
    assert await slow.size("q") == 1


@run_async
async def test_requeue(transport: Transport) -> None:
    await transport.declare_queue(Queue("q"))
    await transport.publish(out("a"))
    await transport.requeue(await drain(transport))
    assert await transport.size("q") == 1
    [again] = await drain(transport)
    assert again.delivery_count == 2


@run_async
async def test_requeue_with_delay(transport: Transport, case: Case) -> None:
    await transport.declare_queue(Queue("q"))
    await transport.publish_batch([out("a"), out("b")])
    a, b = await drain(transport)
    await transport.requeue([a], delay=3600)
    await transport.requeue([b], delay=0.2)
    assert await transport.get(["q"], 2, timeout=0) == []
    assert await transport.size("q") == case.waiting(0, 2)
    assert labels(await transport.get(["q"], 2, timeout=10)) == ["b"]


@run_async
async def test_reject_dead_letters_with_reason(transport: Transport) -> None:
    await transport.declare_queue(Queue("q"))
    await transport.publish_batch([out("a"), out("b")])
    deliveries = await drain(transport)
    await transport.reject(deliveries, "unknown task")
    letters = await transport.dead_letters("q")
    assert [(d.reason, d.delivery_count) for d in letters] == [("unknown task", 1)] * 2
    assert [d.payload for d in letters] == [d.payload for d in reversed(deliveries)]  # newest 1st
    assert len(await transport.dead_letters("q", limit=1)) == 1
    assert await transport.size("q") == 0


@run_async
async def test_max_deliveries_dead_letters(make_transport: MakeTransport, case: Case) -> None:
    case.need_leases()  # AMQP: tests/integration/test_amqp_redelivery.py kills the holder
    transport = make_transport(lease_seconds=0.05, max_deliveries=2)
    await transport.declare_queue(Queue("q"))
    await transport.publish(out("a"))
    assert (await transport.get(["q"], 1, timeout=1))[0].delivery_count == 1
    assert (await transport.get(["q"], 1, timeout=10))[0].delivery_count == 2
    assert await transport.get(["q"], 1, timeout=0.4) == []
    [letter] = await transport.dead_letters("q")
    assert letter.delivery_count == 2
    assert "max_deliveries=2" in letter.reason
    assert await transport.size("q") == 0


@run_async
async def test_requeues_by_a_living_consumer_do_not_count_toward_max_deliveries(
    make_transport: MakeTransport,
) -> None:
    """``max_deliveries`` stops a message that keeps killing its workers; a message a living
    worker gives back (a rate limit's backlog, an eta still ahead, a warm shutdown) may come
    back any number of times (it was dead-lettered after ``max_deliveries`` requeues)."""
    transport = make_transport(max_deliveries=2)
    await transport.declare_queue(Queue("q"))
    await transport.publish(out("a"))
    for n in range(5):
        [got] = await transport.get(["q"], 1, timeout=5)
        assert got.redelivered == (n > 0)
        await transport.requeue([got], delay=0.01 if n % 2 else 0.0)
    [got] = await transport.get(["q"], 1, timeout=5)
    await transport.ack([got])
    assert await transport.dead_letters("q") == []
    assert await transport.size("q") == 0


# -- inspection and consuming ------------------------------------------------------------------
@run_async
async def test_size_and_purge_spare_leased(transport: Transport, case: Case) -> None:
    await transport.declare_queue(Queue("q"))
    await transport.publish_batch([out(str(i)) for i in range(3)])
    await transport.publish(out("later", due_at=time.time() + 3600))
    leased = await transport.get(["q"], 1, timeout=0)
    assert await transport.size("q") == case.waiting(2, 1)
    assert await transport.purge("q") == case.waiting(2, 1)
    assert await transport.size("q") == 0
    await transport.requeue(leased)  # the leased one survived the purge
    assert await transport.size("q") == 1
    assert await transport.size("never-declared") == 0


@run_async
async def test_get_returns_at_most_max_count(transport: Transport) -> None:
    await transport.declare_queue(Queue("q"))
    await transport.publish_batch([out(str(i)) for i in range(5)])
    assert len(await transport.get(["q"], 2, timeout=0)) == 2
    assert len(await transport.get(["q"], 10, timeout=0)) == 3
    assert await transport.get(["q"], 0, timeout=0) == []


@run_async
async def test_get_serves_every_queue(transport: Transport) -> None:
    await transport.declare_queue(Queue("busy"))
    await transport.declare_queue(Queue("quiet"))
    await transport.publish_batch([out(f"b{i}", "busy") for i in range(20)] + [out("q", "quiet")])
    first = await transport.get(["busy", "quiet"], 4, timeout=0)
    assert len(first) == 4
    assert {d.queue for d in first} == {"busy", "quiet"}
    rest = await transport.get(["busy", "quiet"], 100, timeout=0)
    assert len(first) + len(rest) == 21


@run_async
async def test_get_times_out_empty(transport: Transport) -> None:
    await transport.declare_queue(Queue("q"))
    started = time.monotonic()
    assert await transport.get(["q"], 1, timeout=0.2) == []
    assert 0.18 <= time.monotonic() - started < 1.5


@run_async
async def test_publish_sync_from_another_thread_wakes_get(make_transport: MakeTransport) -> None:
    transport = make_transport(poll_interval=10)  # prompt only if woken, not by polling
    await transport.declare_queue(Queue("q"))
    published = threading.Event()
    sent_at: list[float] = []

    def produce() -> None:
        published.wait(5)
        sent_at.append(time.monotonic())
        assert transport.publish_sync([out("a")]) == [1]

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        waiting = asyncio.ensure_future(transport.get(["q"], 1, timeout=10))
        await asyncio.sleep(0.05)  # let get() reach its wait (not needed for correctness)
        published.set()
        got = await waiting
    finally:
        published.set()
        thread.join(5)
    assert labels(got) == ["a"]
    # woken, not found by the next poll 10 s later (a generous bound: the machine may be loaded)
    assert time.monotonic() - sent_at[0] < 5


@run_async
async def test_undecodable_payload_is_delivered_and_dead_lettered_intact(
    transport: Transport, inject_raw: Callable[[Transport, str, bytes], None]
) -> None:
    await transport.declare_queue(Queue("q"))
    garbage = b"\x00\xffnot a message"
    inject_raw(transport, "q", garbage)
    [delivery] = await transport.get(["q"], 1, timeout=5)
    assert delivery.payload == garbage
    with pytest.raises(DecodeError):
        delivery.decode()
    await transport.reject([delivery], "undecodable")
    [letter] = await transport.dead_letters("q")
    assert (letter.payload, letter.reason) == (garbage, "undecodable")
