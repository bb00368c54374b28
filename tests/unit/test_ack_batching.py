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
    """What the transport takes it settles itself: the batcher's timer is dropped (no wake-up
    for nothing) and no settle call of the batcher's own follows."""

    async def run() -> tuple[list[str], list[str], list[int], float]:
        transport = Carrying()
        acks = AckBatcher(transport, Outage("broker", logging.getLogger("test")))
        assert transport.source is acks
        early = await fetched(transport, 3)
        tasks = len(asyncio.all_tasks())
        for delivery in early:
            acks.ack_soon(delivery)
        await asyncio.sleep(0)
        assert len(asyncio.all_tasks()) == tasks  # a timer waits for company, not a task
        taken = acks.take()
        started = time.monotonic()
        await acks.drain()
        return ids(taken), ids(early), transport.calls, time.monotonic() - started

    taken, early, calls, drained_in = asyncio.run(run())
    assert taken == early
    assert calls == []
    assert drained_in < Pulled.early_ack_delay  # nothing was left to wait for


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


class Gated(Carrying):
    """A carrying broker whose ack calls wait for ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await super().ack(deliveries)
        await self.gate.wait()


def test_an_early_ack_after_a_take_still_goes() -> None:
    """A take that empties the batch while the flush naps cancels that flush; an ack
    requested in the same turn still goes (a cancelled flush cannot send it), by the timer
    of a new quiet spell."""

    async def run() -> tuple[list[int], list[str], list[str]]:
        transport = Gated()
        acks = AckBatcher(transport, Outage("broker", logging.getLogger("test")))
        first, second, third = await fetched(transport, 3)
        acks.ack_soon(first)
        while not transport.calls:  # its timer fires: the flush sends it and waits
            await asyncio.sleep(0.01)
        acks.ack_soon(second)  # joins the flush under way
        transport.gate.set()
        for _ in range(3):
            await asyncio.sleep(0)  # the first batch ends; the flush naps for the second
        taken = acks.take()  # the nap is cut short
        acks.ack_soon(third)  # same turn
        deadline = time.monotonic() + 5
        while len(transport.calls) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # by its timer, without a drain
        calls = list(transport.calls)
        await acks.drain()
        return calls, ids(taken), ids([second])

    calls, taken, second = asyncio.run(run())
    assert taken == second
    assert calls == [1, 1]  # the first, then the third
