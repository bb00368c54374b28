"""The kombu layout against kombu 5.7 itself (Celery's transport library), in one process on the
real Redis: what each side writes, the other reads and settles.

kombu's producer to celeriac's consumer and back; a record a kombu consumer leaves in
``unacked`` restored by celeriac after the visibility timeout, and celeriac's restored by
kombu's ``restore_visible``; a celeriac countdown moved to its list by kombu's restore when it
falls due; a celeriac requeue read by kombu as kombu's own requeue (marked, behind the others).
Redis db 7 under a ``global_keyprefix`` of the test's own.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from celeriac.protocol.message import task_message
from celeriac.routing import Exchange, Queue
from celeriac.transports.base import Outgoing
from celeriac.transports.redis import RedisTransport
from celeriac.transports.redis.kombu_transport import KombuRedisTransport
from conftest import delete_redis_keys, require_service

kombu = pytest.importorskip("kombu", reason="kombu 5.7 is a test dependency")

pytestmark = [pytest.mark.redis]

URL = "redis://127.0.0.1:6379/7"
TIMEOUT = 0.3  # the visibility timeout of both sides


@pytest.fixture
def prefix() -> Iterator[str]:
    require_service("Redis", 6379)
    made = f"klw-{uuid.uuid4().hex[:10]}:"
    yield made
    delete_redis_keys(URL, made)


@pytest.fixture
def connection(prefix: str) -> Iterator[Any]:
    """A kombu connection (Celery's), with the same prefix and visibility timeout."""
    options = {"global_keyprefix": prefix, "visibility_timeout": TIMEOUT}
    with kombu.Connection(URL, transport_options=options) as conn:
        yield conn


def ours(prefix: str) -> KombuRedisTransport:
    made = RedisTransport(URL, layout="kombu", global_keyprefix=prefix, visibility_timeout=TIMEOUT)
    assert isinstance(made, KombuRedisTransport)
    return made


def task(label: str, priority: int | None = None) -> Outgoing:
    message = task_message(
        task="wire.task",
        task_id=f"{label}-{uuid.uuid4().hex[:6]}",
        body=b'[["%s"], {}, {}]' % label.encode(),
        content_type="application/json",
        content_encoding="utf-8",
        priority=priority,
    )
    return Outgoing(message, "", "q")


def unacked(prefix: str) -> int:
    client = redis.Redis.from_url(URL)
    try:
        return int(client.hlen(f"{prefix}unacked"))
    finally:
        client.close()


def kombu_get(connection: Any, timeout: float = 5.0) -> Any:
    """kombu's ``basic_get`` on ``q`` (recording the message in ``unacked`` as a consumer
    does), retried until something comes or ``timeout``."""
    channel = connection.default_channel
    deadline = time.monotonic() + timeout
    while (message := channel.basic_get("q")) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return message


def kombu_restore_until(connection: Any, condition: Any, timeout: float = 5.0) -> None:
    """Run kombu's ``restore_visible`` (a Celery worker's periodic sweep) until ``condition``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "kombu's restore never moved it"
        connection.default_channel.qos.restore_visible(interval=1)
        time.sleep(0.02)


def waiting(connection: Any) -> int:
    return int(connection.default_channel._size("q"))


def test_kombus_producer_reaches_celeriacs_consumer(prefix: str, connection: Any) -> None:
    producer = kombu.Producer(connection)
    producer.publish(
        {"x": 1},
        routing_key="q",
        headers={"task": "wire.task", "id": "k-1"},
        serializer="json",
        priority=4,
    )

    async def consume() -> None:
        transport = ours(prefix)
        try:
            [delivery] = await transport.get(["q"], 10, timeout=2)
            message = delivery.decode()
            assert (message.task, message.id, message.body) == ("wire.task", "k-1", b'{"x": 1}')
            assert delivery.transport_data == {"exchange": "", "routing_key": "q", "priority": 4}
            assert unacked(prefix) == 1  # in kombu's record, under celeriac's tag
            await transport.ack([delivery])
            assert unacked(prefix) == 0
        finally:
            await transport.close()

    asyncio.run(consume())


def test_celeriacs_producer_reaches_kombus_consumer(prefix: str, connection: Any) -> None:
    sent = task("a", priority=5)
    transport = ours(prefix)
    try:
        assert transport.publish_sync([sent]) == [1]
        message = kombu_get(connection)
        assert message.headers["id"] == sent.message.id
        assert message.body == sent.message.body and message.properties["priority"] == 5
        assert message.delivery_info == {"exchange": "", "routing_key": "q"}
        assert unacked(prefix) == 1  # kombu's own record
        message.ack()
        assert unacked(prefix) == 0
    finally:
        asyncio.run(transport.close())


def test_a_dead_kombu_consumers_record_is_restored_by_celeriac(
    prefix: str, connection: Any
) -> None:
    kombu.Producer(connection).publish(
        {}, routing_key="q", headers={"task": "wire.task", "id": "k-2"}, serializer="json"
    )
    taken = kombu_get(connection)  # and never acked: its consumer died
    assert taken is not None and unacked(prefix) == 1
    connection.default_channel.qos._delivered.clear()  # no restore at close: it is dead

    async def rescue() -> None:
        transport = ours(prefix)
        try:
            started = time.monotonic()
            [delivery] = await transport.get(["q"], 1, timeout=5)
            assert time.monotonic() - started >= TIMEOUT / 2  # not before its timeout ran out
            assert delivery.decode().id == "k-2"
            assert (delivery.delivery_count, delivery.redelivered) == (2, True)
            assert delivery.decode().headers["redelivered"] is True  # kombu's mark
            await transport.ack([delivery])
            assert unacked(prefix) == 0
        finally:
            await transport.close()

    asyncio.run(rescue())


def test_celeriacs_record_is_restored_by_kombu(prefix: str, connection: Any) -> None:
    sent = task("b")
    transport = ours(prefix)

    async def take() -> Any:
        [delivery] = await transport.get(["q"], 1, timeout=2)
        return delivery

    try:
        transport.publish_sync([sent])
        held = asyncio.run(take())  # and never acked
        kombu_restore_until(connection, lambda: waiting(connection) == 1)
        message = kombu_get(connection)
        assert message.headers["id"] == sent.message.id
        assert message.delivery_info["redelivered"] is True
        assert message.headers["redelivered"] is True
        message.ack()
        # the first holder's ack comes too late: its record is gone, nothing else is touched
        asyncio.run(transport.ack([held]))
        assert unacked(prefix) == 0
    finally:
        asyncio.run(transport.close())


def test_a_celeriac_countdown_is_moved_by_kombus_restore(prefix: str, connection: Any) -> None:
    sent = task("later")
    due = time.time() + 0.5
    transport = ours(prefix)
    try:
        transport.publish_sync([Outgoing(sent.message, "", "q", due_at=due)])
        assert connection.default_channel.basic_get("q") is None  # not before it is due
        kombu_restore_until(connection, lambda: waiting(connection) == 1)
        assert time.time() >= due
        message = kombu_get(connection)
        assert message.headers["id"] == sent.message.id
        message.ack()
    finally:
        asyncio.run(transport.close())


def test_a_celeriac_requeue_is_kombus(prefix: str, connection: Any) -> None:
    """Marked redelivered and pushed behind the waiting messages, as kombu's reject(requeue)."""
    first, second = task("first"), task("second")
    transport = ours(prefix)

    async def take_and_requeue() -> None:
        await transport.declare_queue(Queue("q", exchange=Exchange("q"), routing_key="q"))
        await transport.publish_batch([first, second])
        [delivery] = await transport.get(["q"], 1, timeout=2)
        assert delivery.decode().id == first.message.id
        await transport.requeue([delivery])

    try:
        asyncio.run(take_and_requeue())
        ids = []
        for _ in range(2):
            message = kombu_get(connection)
            ids.append(message.headers["id"])
            message.ack()
        assert ids == [second.message.id, first.message.id]
        assert message.delivery_info["redelivered"] is True
    finally:
        asyncio.run(transport.close())
