"""The optional part of the transport contract, on every broker (memory, SQLite, Redis in both
layouts, RabbitMQ): ``stop_consuming`` (its default and promise are in
:mod:`celeriac.transports.base`).
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from test_transport_contract import (
    TRANSPORTS,
    Case,
    MakeTransport,
    _cleanup_redis,
    make_transport,
    out,
    run_async,
    transport,
)
from test_transport_contract_kombu import _inject_kombu, _make_kombu

from celeriac.routing import Queue
from celeriac.transports.base import Delivery, Transport

__all__ = ["make_transport", "transport"]

KOMBU = "redis-kombu"
CASES: dict[str, Case] = {
    **TRANSPORTS,
    KOMBU: Case(_make_kombu, _inject_kombu, (pytest.mark.redis,), _cleanup_redis),
}


@pytest.fixture(params=[pytest.param(name, marks=c.marks) for name, c in CASES.items()])
def broker(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def case(broker: str) -> Case:
    return CASES[broker]


async def declared(transport: Transport, *names: str) -> None:
    for name in names:
        await transport.declare_queue(Queue(name))


# -- stop_consuming ----------------------------------------------------------------------------
@run_async
async def test_stop_consuming_leaves_what_comes_later_to_other_consumers(
    make_transport: MakeTransport,
) -> None:
    """A consumer that fetched from ``q`` (RabbitMQ: its consumer started, pushing) stops
    consuming it: what is sent afterwards waits on the broker, none of it held, and another
    consumer takes all of it, each delivered for the first time."""
    worker, other = make_transport(), make_transport()
    await declared(worker, "q", "r")
    assert await worker.get(["q", "r"], 5, timeout=0.2) == []
    await worker.publish_batch([out(f"m{i}") for i in range(3)])
    await worker.stop_consuming("q")
    assert await worker.get(["r"], 5, timeout=0.1) == []
    assert await worker.size("q") == 3
    taken = await other.get(["q"], 10, timeout=5)
    while len(taken) < 3:
        more = await other.get(["q"], 10, timeout=5)
        assert more, f"only {len(taken)} of 3 came back"
        taken += more
    assert [d.delivery_count for d in taken] == [1, 1, 1]
    await other.ack(taken)


@run_async
async def test_stop_consuming_gives_back_what_a_cancelled_get_took(
    make_transport: MakeTransport,
) -> None:
    """A ``get`` cancelled while messages arrive, then ``stop_consuming``: whatever the get
    had not handed over is back in the queue once it returns (none leased to nobody)."""
    worker, other = make_transport(), make_transport()
    await declared(worker, "q", "r")
    fetch = asyncio.ensure_future(worker.get(["q", "r"], 10, timeout=5))
    await asyncio.sleep(0.05)  # let it start waiting (a race either way is what is tested)
    await worker.publish_batch([out(f"m{i}") for i in range(4)])
    fetch.cancel()
    handed: list[Delivery] = []
    with contextlib.suppress(asyncio.CancelledError):
        handed = await fetch
    await worker.stop_consuming("q")
    assert await worker.size("q") == 4 - len(handed)
    rest = await other.get(["q"], 10, timeout=0)
    assert len(handed) + len(rest) == 4
    await other.ack(rest)
    if handed:
        await worker.ack(handed)


@run_async
async def test_stop_consuming_a_queue_never_consumed_is_harmless(transport: Transport) -> None:
    await declared(transport, "q")
    await transport.stop_consuming("q")
    await transport.stop_consuming("never-declared")
    await transport.publish(out("m"))
    [again] = await transport.get(["q"], 1, timeout=5)  # a get naming it consumes it again
    await transport.ack([again])


def test_the_default_holds_nothing_back() -> None:
    """A transport without a ``stop_consuming`` of its own: nothing to give back, no error."""
    from celeriac.transports.memory import MemoryTransport

    async def body() -> None:
        bare = MemoryTransport("memory://bare-defaults")
        await bare.stop_consuming("q")
        await bare.close()

    asyncio.run(body())
