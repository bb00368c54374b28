"""Early acks wait for company only where the broker lets them (:mod:`celeriac.worker.acks`).

On a broker the worker pulls from, early acks requested within ``early_ack_delay`` share one
settle call; on one that pushes within a QoS window (RabbitMQ) each turn's acks go at once. A
late ack never waits for company. Run on the in-memory broker, whose settle calls are counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import ClassVar

from celeriac.routing import Queue
from celeriac.transports.amqp import AMQPTransport
from celeriac.transports.base import Delivery, EarlyAcks, Outgoing, Transport
from celeriac.transports.memory import MemoryTransport
from celeriac.transports.redis import RedisTransport
from celeriac.transports.sqlite import SQLiteTransport
from celeriac.utils.outage import Outage
from celeriac.worker.acks import AckBatcher
from conftest import json_task_message


class Counting(MemoryTransport):
    """The memory broker, noting the size of each ack call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        self.calls.append(len(deliveries))
        await super().ack(deliveries)


class Pushed(Counting):
    early_ack_delay: ClassVar[float] = 0.0


class Pulled(Counting):
    early_ack_delay: ClassVar[float] = 0.3  # longer than Redis' 2 ms: no loaded box outlasts it


async def fetched(transport: Transport, n: int) -> list[Delivery]:
    await transport.declare_queue(Queue("q"))
    items = []
    for i in range(n):
        message = json_task_message(f"m{i}")
        items.append(Outgoing(message, "", "q", wire=message.to_wire()))
    await transport.publish_batch(items)
    return await transport.get(["q"], n, timeout=1)


async def soon_in_turns(transport: Counting, turns: int) -> list[int]:
    """One early ack per loop turn, ``turns`` times; the ack calls made."""
    acks = AckBatcher(transport, Outage("broker", logging.getLogger("test")))
    for delivery in await fetched(transport, turns):
        acks.ack_soon(delivery)
        await asyncio.sleep(0)
    await acks.drain()
    return transport.calls


def test_early_acks_of_a_pulling_broker_share_one_call() -> None:
    assert asyncio.run(soon_in_turns(Pulled(), 5)) == [5]


def test_early_acks_of_a_pushing_broker_go_each_turn() -> None:
    calls = asyncio.run(soon_in_turns(Pushed(), 5))
    assert sum(calls) == 5 and len(calls) > 1


def test_a_late_ack_is_on_the_broker_when_it_returns() -> None:
    async def run() -> list[int]:
        transport = Counting()
        acks = AckBatcher(transport, Outage("broker", logging.getLogger("test")))
        (delivery,) = await fetched(transport, 1)
        await acks.ack(delivery)
        return list(transport.calls)

    assert asyncio.run(run()) == [1]


def test_each_broker_says_how_long_early_acks_may_wait() -> None:
    assert AMQPTransport.early_ack_delay == 0.0
    assert RedisTransport.early_ack_delay > 0 and SQLiteTransport.early_ack_delay > 0


def ids(deliveries: Sequence[Delivery]) -> list[str]:
    return [delivery.decode().id for delivery in deliveries]


class Carrying(Pulled):
    """A pulling broker that carries early acks on writes of its own: it keeps the source."""

    def __init__(self) -> None:
        super().__init__()
        self.source: EarlyAcks | None = None

    def carry_early_acks(self, source: EarlyAcks) -> None:
        self.source = source


def test_early_acks_handed_to_a_carrying_broker_are_not_sent_again() -> None:
    """What the transport takes it settles itself: the batcher's nap ends at once (no timer
    wake-up for nothing) and no settle call of the batcher's own follows."""

    async def run() -> tuple[list[str], list[str], list[int], float]:
        transport = Carrying()
        acks = AckBatcher(transport, Outage("broker", logging.getLogger("test")))
        assert transport.source is acks
        early = await fetched(transport, 3)
        for delivery in early:
            acks.ack_soon(delivery)
        await asyncio.sleep(0)  # the flusher naps
        taken = acks.take()
        started = time.monotonic()
        await acks.drain()
        return ids(taken), ids(early), transport.calls, time.monotonic() - started

    taken, early, calls, drained_in = asyncio.run(run())
    assert taken == early
    assert calls == []
    assert drained_in < Pulled.early_ack_delay  # the nap was cut short, not slept out


def test_a_late_ack_is_never_handed_over() -> None:
    """Somebody waits for a late ack: only the early ones go to the transport."""

    async def run() -> tuple[list[str], list[str], list[int]]:
        transport = Carrying()
        acks = AckBatcher(transport, Outage("broker", logging.getLogger("test")))
        early, late = await fetched(transport, 2)
        acks.ack_soon(early)
        acked_late = asyncio.ensure_future(acks.ack(late))
        await asyncio.sleep(0)
        taken = acks.take()
        await acked_late
        return ids(taken), ids([early]), transport.calls

    taken, early, calls = asyncio.run(run())
    assert taken == early
    assert calls == [1]  # the late ack, by the batcher


def test_an_early_ack_after_a_take_still_goes() -> None:
    """An ack requested after the transport emptied the batch (the nap being cut short) is
    sent by a new flush, not stranded."""

    async def run() -> list[int]:
        transport = Carrying()
        acks = AckBatcher(transport, Outage("broker", logging.getLogger("test")))
        first, second = await fetched(transport, 2)
        acks.ack_soon(first)
        await asyncio.sleep(0)  # the flusher naps
        assert len(acks.take()) == 1
        acks.ack_soon(second)  # same turn as the cut: the cancelled flusher cannot take it
        await acks.drain()
        return transport.calls

    assert asyncio.run(run()) == [1]
