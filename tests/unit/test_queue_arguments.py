"""Queue arguments (kombu's ``queue_arguments``) on the brokers that emulate AMQP, and on AMQP.

Memory, SQLite and Redis honour ``x-max-priority`` as the queue's priority range and ignore the
other arguments, saying so once in the log; RabbitMQ gets them all as they are (checked on a
real RabbitMQ in ``tests/integration/test_routing_amqp.py``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import kombu_standins as kombu
import pytest

from celeriac.protocol.message import task_message
from celeriac.routing import Exchange, Queue, as_queue
from celeriac.transports import arguments as emulated
from celeriac.transports.amqp.topology import queue_arguments
from celeriac.transports.base import Outgoing, Transport
from celeriac.transports.memory import MemoryTransport
from celeriac.transports.sqlite import SQLiteTransport
from conftest import delete_redis_keys, require_service

REDIS_URL = "redis://127.0.0.1:6379/15"
Make = Callable[[], Transport]


@pytest.fixture(params=["memory", "sqlite", "redis"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    """New transports on one broker private to the test."""
    name = f"qargs-{uuid.uuid4().hex[:8]}"
    if request.param == "memory":
        yield lambda: MemoryTransport(f"memory://{name}")
    elif request.param == "sqlite":
        yield lambda: SQLiteTransport(f"sqlite:///{tmp_path / name}.db")
    else:
        require_service("Redis", 6379)
        from celeriac.transports.redis import RedisTransport

        prefix = f"celeriac-test:{name}:"
        yield lambda: RedisTransport(REDIS_URL, key_prefix=prefix)
        delete_redis_keys(REDIS_URL, prefix)


def run(make: Make, use: Callable[[Transport], Coroutine[Any, Any, Any]]) -> Any:
    async def main() -> Any:
        transport = make()
        await transport.connect()
        try:
            return await use(transport)
        finally:
            await transport.close()

    return asyncio.run(asyncio.wait_for(main(), 30))


def sent(label: str, queue: str, priority: int) -> Outgoing:
    message = task_message(
        task="t",
        task_id=f"{label}-{uuid.uuid4().hex[:6]}",
        body=b"[[], {}, {}]",
        content_type="application/json",
        content_encoding="utf-8",
        priority=priority,
    )
    return Outgoing(message, "", queue)


def test_x_max_priority_is_the_queues_priority_range(make: Make) -> None:
    """With ``x-max-priority: 3`` priorities 5 and 9 are both 3: they keep their order (FIFO)
    instead of 9 jumping ahead, and stay ahead of 1. In a 0-9 queue the 9 would go first."""

    async def use(transport: Transport) -> list[list[str]]:
        orders = []
        for name, arguments in (("capped", {"x-max-priority": 3}), ("full", {})):
            await transport.declare_queue(as_queue(kombu.Queue(name, queue_arguments=arguments)))
            await transport.publish_batch(
                [sent("A", name, 5), sent("B", name, 9), sent("C", name, 1), sent("D", name, 3)]
            )
            got = await transport.get([name], 10, timeout=0)
            await transport.ack(got)
            orders.append([d.decode().id.split("-")[0] for d in got])
        return orders

    capped, full = run(make, use)
    assert capped == ["A", "B", "D", "C"]
    assert full == ["B", "A", "D", "C"]


def test_other_arguments_are_ignored_and_said_once(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    emulated._reported.clear()
    name = f"ttl-{uuid.uuid4().hex[:6]}"
    queue = as_queue(
        kombu.Queue(
            name,
            queue_arguments={"x-queue-type": "quorum", "x-max-priority": 5},
            message_ttl=1,
            max_length=2,
        )
    )

    async def use(transport: Transport) -> int:
        await transport.declare_queue(queue)
        await transport.declare_queue(queue)
        await transport.publish_batch([sent(str(i), name, 0) for i in range(4)])
        return await transport.size(name)

    with caplog.at_level(logging.DEBUG, logger="celeriac.transports.arguments"):
        assert run(make, use) == 4  # no x-max-length here: nothing dropped
        run(make, use)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert name in text
    assert "argument(s) x-max-length, x-message-ttl have no effect" in text
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("x-queue-type" in line and name in line for line in debug)


def test_a_queue_with_only_x_max_priority_logs_nothing(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    emulated._reported.clear()
    queue = Queue(f"quiet-{uuid.uuid4().hex[:6]}", arguments={"x-max-priority": 4})

    async def use(transport: Transport) -> None:
        await transport.declare_queue(queue)

    with caplog.at_level(logging.DEBUG, logger="celeriac.transports.arguments"):
        run(make, use)
    assert not [r for r in caplog.records if queue.name in r.getMessage()]


def test_a_no_declare_queue_is_not_declared(make: Make) -> None:
    theirs = as_queue(kombu.Queue("theirs", kombu.Exchange("their-ex"), "k", no_declare=True))

    async def use(transport: Transport) -> tuple[int, int]:
        await transport.declare_queue(theirs)
        before = await transport.publish(sent("x", "theirs", 0))  # no such queue: dropped
        await transport.declare_queue(Queue("theirs"))  # someone else declares it
        return before, await transport.publish(sent("y", "theirs", 0))

    assert run(make, use) == (0, 1)


# --- what RabbitMQ is given ----------------------------------------------------------------------


def test_rabbitmq_gets_the_queue_arguments_as_they_are() -> None:
    queue = as_queue(
        kombu.Queue(
            "tasks",
            kombu.Exchange("tasks"),
            "tasks",
            queue_arguments={"x-max-priority": 10, "x-dead-letter-exchange": "dlx"},
            message_ttl=60,
        )
    )
    expected = {"x-max-priority": 10, "x-dead-letter-exchange": "dlx", "x-message-ttl": 60_000}
    assert queue_arguments(queue, "classic", max_priority=9) == expected
    assert queue_arguments(queue, "classic", max_priority=0) == expected  # the queue's own wins
    assert queue_arguments(Queue("plain"), "classic", max_priority=9) == {"x-max-priority": 9}
    assert queue_arguments(Queue("plain"), "classic", max_priority=0) == {}
    capped = Queue("capped", arguments={"x-max-priority": 4})
    assert queue_arguments(capped, "classic") == {"x-max-priority": 4}


@pytest.mark.parametrize(
    ("queue", "exclusive"),
    [
        (Queue("durable"), False),
        (Queue("mine", auto_delete=True), True),  # celeriac's own: goes with its connection
        (Queue("shared", auto_delete=True, exclusive=False), False),
        (as_queue(kombu.Broadcast("bc")), False),  # as kombu declares it
        (as_queue(kombu.Queue("k", exclusive=True)), True),
    ],
)
def test_exclusive_is_what_the_queue_says(queue: Queue, exclusive: bool) -> None:
    assert queue.exclusive is exclusive
    assert queue.auto_delete or not exclusive


def test_x_max_priority_must_be_an_amqp_priority() -> None:
    from celeriac.errors import ImproperlyConfigured

    for bad in (-1, 256, "9", True, 2.0):
        with pytest.raises(ImproperlyConfigured, match="x-max-priority"):
            Queue("q", arguments={"x-max-priority": bad})
    assert Queue("q", arguments={"x-max-priority": 255}).max_priority == 9
    assert Queue("q", arguments={"x-max-priority": 0}).max_priority == 0
    assert Queue("q", exchange=Exchange("e"), arguments={"x-max-priority": 2}).max_priority == 2
