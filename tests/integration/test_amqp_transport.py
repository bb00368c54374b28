"""The AMQP transport against the real RabbitMQ, in-process: routing, delays, redelivery, faults.

Each test uses queue and exchange names of its own in the ``celeriac-test`` vhost and deletes
them afterwards (see :mod:`amqp_broker`). What needs real worker processes is in
``test_amqp_worker.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

import amqp_broker
from celeriac import Celeriac
from celeriac.errors import TransportError
from celeriac.protocol.codec import Codecs, decode_body
from celeriac.protocol.message import Message
from celeriac.routing import Exchange, Queue
from celeriac.transports.amqp import AMQPTransport
from celeriac.transports.amqp.delay import delay_name, ttl_bucket
from celeriac.transports.base import Delivery, Outgoing
from conftest import json_task_message, require_service

pytestmark = pytest.mark.amqp


class Names:
    """Unique names for one test, and every transport it made, cleaned up afterwards."""

    def __init__(self) -> None:
        self.prefix = f"it-{uuid.uuid4().hex[:8]}"
        self.made: list[AMQPTransport] = []
        self.extra_queues: set[str] = set()
        self.extra_exchanges: set[str] = set()

    def __call__(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def transport(self, url: str = amqp_broker.URL, **options: Any) -> AMQPTransport:
        transport = AMQPTransport(url, **options)
        self.made.append(transport)
        return transport

    def cleanup(self) -> None:
        queues, exchanges = set(self.extra_queues), set(self.extra_exchanges)
        for transport in self.made:
            more_queues, more_exchanges = transport.declared_names()
            queues |= more_queues
            exchanges |= more_exchanges
        amqp_broker.delete(queues, exchanges)


@pytest.fixture(scope="module")
def vhost() -> None:
    require_service("RabbitMQ", 5672)
    amqp_broker.ensure_vhost()


@pytest.fixture
def names(vhost: None) -> Iterator[Names]:
    made = Names()
    yield made
    made.cleanup()


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), timeout=30))


def message(label: str, priority: int | None = None) -> Message:
    return json_task_message(label, "tests.amqp", priority=priority)


def label(delivery: Delivery) -> str:
    return delivery.decode().id.split("-")[0]


def test_topic_exchange_routes_one_message_to_two_queues_and_another_to_none(
    names: Names,
) -> None:
    async def main() -> None:
        topic = Exchange(names("events"), "topic")
        eu, everything = names("eu"), names("all")
        producer, consumer = names.transport(), names.transport()
        await consumer.declare_queue(Queue(eu, exchange=topic, routing_key="orders.*.eu"))
        await consumer.declare_queue(Queue(everything, exchange=topic, routing_key="orders.#"))
        sent = [
            Outgoing(message("x"), topic.name, "orders.new.eu"),
            Outgoing(message("y"), topic.name, "shipping.new.eu"),
        ]
        assert await producer.publish_batch(sent) == [1, 0]  # routed; returned as unroutable
        for queue in (eu, everything):
            got = await consumer.get([queue], 10, timeout=5)
            assert [label(d) for d in got] == ["x"]
            await consumer.ack(got)
        assert await consumer.get([eu, everything], 10, timeout=0.3) == []
        for transport in (producer, consumer):
            await transport.close()

    run(main)


def test_a_day_long_countdown_waits_in_a_delay_queue_with_its_ttl_and_target(
    names: Names,
) -> None:
    exchange = Exchange(names("orders"), "direct")
    queue = names("q")
    ttl_ms, exact = ttl_bucket(86400 - 1)
    delay_queue = delay_name(exchange.name, ttl_ms)

    async def main() -> None:
        transport = names.transport()
        await transport.declare_queue(Queue(queue, exchange=exchange, routing_key="new"))
        due = time.time() + 86400
        assert await transport.publish(Outgoing(message("later"), exchange.name, "new", due)) == 1
        assert await transport.size(queue) == 0
        await transport.close()

    run(main)
    assert not exact  # a day is on a coarse grid: the message carries an eta for the last hop
    info = amqp_broker.queue_table()[delay_queue]
    assert info["messages"] == "1"
    assert f'{{"x-message-ttl",{ttl_ms}}}' in info["arguments"]
    assert f'{{"x-dead-letter-exchange","{exchange.name}"}}' in info["arguments"]
    assert 86400 * 1000 - ttl_ms < 86400 * 1000 / 64  # early by less than 1/64: one more hop


def test_a_short_countdown_is_delivered_when_due_with_its_routing_key(names: Names) -> None:
    async def main() -> None:
        topic = Exchange(names("events"), "topic")
        first, second = names("a"), names("b")
        transport = names.transport()
        await transport.declare_queue(Queue(first, exchange=topic, routing_key="job.*"))
        await transport.declare_queue(Queue(second, exchange=topic, routing_key="job.#"))
        due = time.time() + 1.0
        await transport.publish(Outgoing(message("soon"), topic.name, "job.x", due))
        assert await transport.get([first, second], 10, timeout=0.5) == []
        got: list[Delivery] = []
        while len(got) < 2:
            got += await transport.get([first, second], 10, timeout=5)
        assert time.time() >= due
        assert sorted(d.queue for d in got) == sorted([first, second])  # key kept: both match
        assert {d.decode().id for d in got} == {got[0].decode().id}
        await transport.ack(got)
        await transport.close()

    run(main)


def test_redelivered_past_max_deliveries_lands_in_the_dlq_with_its_reason(names: Names) -> None:
    queue = names("poison")

    async def main() -> None:
        setup = names.transport()
        await setup.declare_queue(Queue(queue))
        await setup.publish(Outgoing(message("poison"), "", queue))
        for count in (1, 2):  # a holder dies (its connection closes) without settling
            holder = names.transport(max_deliveries=2)
            [held] = await holder.get([queue], 1, timeout=5)
            assert held.delivery_count == count
            await holder.close()
        survivor = names.transport(max_deliveries=2)
        assert await survivor.get([queue], 1, timeout=1) == []
        [letter] = await survivor.dead_letters(queue)
        assert "max_deliveries=2" in letter.reason
        assert letter.delivery_count == 2
        assert Message.from_wire(letter.payload).id.startswith("poison")
        assert await survivor.size(queue) == 0
        for transport in (setup, survivor):
            await transport.close()

    run(main)


def test_requeues_by_a_living_worker_raise_the_count_but_never_dead_letter(names: Names) -> None:
    queue = names("q")

    async def main() -> None:
        transport = names.transport(max_deliveries=2)
        await transport.declare_queue(Queue(queue))
        await transport.publish(Outgoing(message("a"), "", queue))
        for count in range(1, 6):  # a warm shutdown, an eta not yet due, a rate limit...
            [delivery] = await transport.get([queue], 1, timeout=5)
            assert delivery.delivery_count == count
            await transport.requeue([delivery])
        [delivery] = await transport.get([queue], 1, timeout=5)
        await transport.ack([delivery])
        assert await transport.dead_letters(queue) == []
        await transport.close()

    run(main)


def test_a_dropped_connection_skips_stale_acks_and_redelivers(
    names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    queue = names("q")

    async def main() -> None:
        transport = names.transport()
        await transport.declare_queue(Queue(queue))
        await transport.publish(Outgoing(message("a"), "", queue))
        [first] = await transport.get([queue], 1, timeout=5)
        link = transport.current_link()
        assert link is not None
        await link.connection.close()  # as if the network dropped it
        with caplog.at_level(logging.WARNING, logger="celeriac.transports.amqp"):
            await transport.ack([first])  # stale: must not ack another message on a new channel
        assert any("no longer held" in r.getMessage() for r in caplog.records)
        [again] = await transport.get([queue], 1, timeout=5)  # reconnected, re-declared
        assert again.decode().id == first.decode().id
        assert again.delivery_count == 2
        await transport.ack([again])
        assert await transport.size(queue) == 0
        await transport.close()

    run(main)


def test_an_early_ack_lowers_qos_so_nothing_is_pushed_past_the_room_asked(names: Names) -> None:
    """A worker with a window of two: one task runs (acked early, still in its window), one
    place is asked for. Two messages arrive: one is pushed, the other waits on the broker,
    for any consumer, instead of in this link's buffer (QoS fell with the early ack)."""
    queue = names("qos")

    async def main() -> None:
        worker, producer = names.transport(), names.transport()
        await worker.declare_queue(Queue(queue))
        await producer.publish(Outgoing(message("running"), "", queue))
        [running] = await worker.get([queue], 2, timeout=5)
        fetch = asyncio.ensure_future(worker.get([queue], 1, timeout=5))
        await worker.ack([running])
        await producer.publish_batch([Outgoing(message(f"lax{i}"), "", queue) for i in range(2)])
        [first] = await fetch
        link = worker.current_link()
        assert link is not None
        channel = await link.channel("consume")
        # answered after every delivery the queue already made to this channel
        ok = await channel.queue_declare(queue, passive=True)
        assert ok.message_count == 1
        assert not link.buffers.get(queue)
        assert link.prefetch == 1
        await worker.ack([first])
        [second] = await worker.get([queue], 1, timeout=5)
        assert (label(first), label(second)) == ("lax0", "lax1")
        await worker.ack([second])
        for transport in (worker, producer):
            await transport.close()

    run(main)


def test_qos_follows_the_capacity_the_consumer_states(names: Names) -> None:
    """With ``watch_capacity`` (as a worker states it), QoS is lowered as soon as the stated
    capacity falls below it, and raised once RabbitMQ can push nothing more and the consumer
    has room again; never a message past the capacity in this link."""
    queue = names("capacity")
    capacity = [2]

    async def flushed(link: Any) -> int:
        channel = await link.channel("consume")
        return int((await channel.queue_declare(queue, passive=True)).message_count or 0)

    async def main() -> None:
        worker, producer = names.transport(), names.transport()
        worker.watch_capacity(lambda: capacity[0])
        await worker.declare_queue(Queue(queue))
        await producer.publish(Outgoing(message("running"), "", queue))
        [running] = await worker.get([queue], 2, timeout=5)
        link = worker.current_link()
        assert link is not None and link.prefetch == 2
        capacity[0] = 1  # it started and is acked early: it fills the window, not the QoS
        await worker.ack([running])
        assert link.prefetch == 1
        await producer.publish_batch([Outgoing(message(f"m{i}"), "", queue) for i in range(3)])
        [first] = await worker.get([queue], 1, timeout=5)
        assert await flushed(link) == 2 and not link.buffers.get(queue)
        capacity[0] = 2  # the running task ended: room for one more, unacked
        [second] = await worker.get([queue], 1, timeout=5)
        assert link.prefetch == 2
        assert await flushed(link) == 1 and not link.buffers.get(queue)
        assert [label(first), label(second)] == ["m0", "m1"]
        await worker.ack([first, second])
        await worker.purge(queue)
        for transport in (worker, producer):
            await transport.close()

    run(main)


def test_stop_consuming_puts_back_what_was_pushed_uncounted(names: Names) -> None:
    queue, kept = names("paused"), names("kept")

    async def main() -> None:
        worker = names.transport()
        for name in (queue, kept):
            await worker.declare_queue(Queue(name))
        assert await worker.get([queue, kept], 3, timeout=0.2) == []  # consuming, QoS 3
        await worker.publish_batch([Outgoing(message(f"m{i}"), "", queue) for i in range(3)])
        link = worker.current_link()
        assert link is not None
        channel = await link.channel("consume")
        await channel.queue_declare(queue, passive=True)  # every push made has arrived
        assert len(link.buffers[queue]) == 3
        await worker.stop_consuming(queue)
        assert queue not in link.consumers and queue not in link.buffers
        assert kept in link.consumers
        assert await worker.size(queue) == 3
        other = names.transport()
        got: list[Delivery] = []
        while len(got) < 3:
            got += await other.get([queue], 3, timeout=5)
        assert sorted(label(d) for d in got) == ["m0", "m1", "m2"]
        assert [d.delivery_count for d in got] == [1, 1, 1]  # given back, not lost
        await other.ack(got)
        for transport in (worker, other):
            await transport.close()

    run(main)


def test_quorum_queues_on_option(names: Names) -> None:
    queue = names("quorum")

    async def main() -> None:
        transport = names.transport(queue_type="quorum")
        await transport.declare_queue(Queue(queue))
        await transport.publish(Outgoing(message("a"), "", queue))
        [delivery] = await transport.get([queue], 1, timeout=5)
        await transport.reject([delivery], "bad input")
        [letter] = await transport.dead_letters(queue)
        assert letter.reason == "bad input"
        await transport.close()

    run(main)
    table = amqp_broker.queue_table()
    assert table[queue]["type"] == "quorum"
    assert table[f"{queue}.dlq"]["type"] == "quorum"


def test_failover_list_and_no_password_in_errors_or_reprs(names: Names) -> None:
    async def main() -> None:
        dead_first = names.transport(f"amqp://guest:guest@127.0.0.1:1//;{amqp_broker.URL}")
        await dead_first.connect()  # the first URL refuses; the second answers
        await dead_first.close()
        wrong = names.transport(f"amqp://guest:s3cret-pw@127.0.0.1:5672/{amqp_broker.VHOST}")
        assert "s3cret-pw" not in repr(wrong)
        with pytest.raises(TransportError) as caught:
            await wrong.connect()
        assert "s3cret-pw" not in str(caught.value)
        assert caught.value.__cause__ is None or "s3cret-pw" not in repr(caught.value.__cause__)

    run(main)


def test_sync_sends_from_many_threads_share_one_portal_loop(names: Names) -> None:
    queue = names("sync")
    app = Celeriac("amqp_sync", broker=amqp_broker.URL, backend=None, task_default_queue=queue)

    @app.task(name="a.nothing")
    def nothing(i: int) -> int:
        return i

    errors: list[BaseException] = []

    def send(start: int) -> None:
        try:
            for i in range(start, start + 50):
                nothing.delay(i)
        except BaseException as exc:
            errors.append(exc)

    def portals() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("celeriac-portal")}

    before = portals()  # other apps of this test process may have their own
    threads = [threading.Thread(target=send, args=(n * 50,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    names.extra_queues |= {queue, f"{queue}.dlq"}
    try:
        assert errors == []
        assert len(portals() - before) == 1  # this app's eight threads share one loop
        app.producer.flush(timeout=30)  # the sends were pipelined: every confirm is in now
        transport = names.transport()

        async def count() -> None:
            assert await transport.size(queue) == 400
            await transport.close()

        run(count)
    finally:
        app.close()


def test_without_publisher_confirms_messages_still_arrive(names: Names) -> None:
    queue = names("fast")

    async def main() -> None:
        transport = names.transport(confirm_publish=False)
        await transport.declare_queue(Queue(queue))
        sent = [Outgoing(message(str(i)), "", queue) for i in range(300)]
        assert await transport.publish_batch(sent) == [1] * 300  # written, not confirmed
        got: list[Delivery] = []
        while len(got) < 300:
            more = await transport.get([queue], 300, timeout=5)
            assert more, "messages published without confirms did not arrive"
            got += more
        assert [label(d) for d in got] == [str(i) for i in range(300)]
        await transport.ack(got)
        await transport.close()

    run(main)


#: Celery 5.7 and kombu (with py-amqp) are test dependencies: the test's own interpreter runs them
#: (the benchmark's Celery venv is not built in CI, where a skip would hide this test).
CELERY_PYTHON = sys.executable
CELERY_SEND = """
import sys
from celery import Celery
app = Celery(broker=sys.argv[1])
app.send_task("a.record", args=("from-celery",), queue=sys.argv[2], priority=5)
"""
CELERY_READ = """
import json, sys
from kombu import Connection
with Connection(sys.argv[1]) as conn:
    m = conn.default_channel.basic_get(sys.argv[2], no_ack=True)
    body = m.body if isinstance(m.body, str) else m.body.decode()
    print(json.dumps([m.headers["task"], m.properties.get("priority"), body]))
"""


def test_celery_and_celeriac_read_each_others_messages(names: Names) -> None:
    queue = names("interop")
    names.extra_queues |= {queue, f"{queue}.dlq"}
    names.extra_exchanges.add(queue)  # Celery declares a direct exchange named as the queue
    # Celery declares the queue first (without priorities): celeriac uses it as it is
    argv = [CELERY_PYTHON, "-c", CELERY_SEND, amqp_broker.URL, queue]
    subprocess.run(argv, check=True, timeout=60, capture_output=True)

    async def read() -> None:
        transport = names.transport()
        await transport.declare_queue(Queue(queue))
        [delivery] = await transport.get([queue], 1, timeout=5)
        got = delivery.decode()
        assert (got.task, got.priority) == ("a.record", 5)
        assert decode_body(got, accept=("application/json",), codecs=Codecs.with_defaults())[
            :2
        ] == (["from-celery"], {})
        await transport.ack([delivery])
        await transport.close()

    run(read)
    app = Celeriac("interop", broker=amqp_broker.URL, backend=None, task_default_queue=queue)
    try:
        app.send_task("a.record", ("from-celeriac",), priority=3)
    finally:
        app.close()
    argv = [CELERY_PYTHON, "-c", CELERY_READ, amqp_broker.URL, queue]
    done = subprocess.run(argv, check=True, timeout=60, capture_output=True, text=True)
    task, priority, body = json.loads(done.stdout)
    assert (task, priority) == ("a.record", 3)
    assert json.loads(body)[:2] == [["from-celeriac"], {}]
