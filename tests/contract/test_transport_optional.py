"""The optional part of the transport contract, on every broker (memory, SQLite, Redis in both
layouts, RabbitMQ): ``stop_consuming``, ``oldest_message_age`` and ``remove_dead_letters``
(their defaults and promises are in :mod:`celeriac.transports.base`).

Where a broker cannot tell a queue's oldest age cheaply it answers ``None`` by design, named in
:data:`AGE_UNKNOWN` with the reason; every other test holds on every broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

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
from celeriac.transports.base import DeadLetter, Delivery, Transport

__all__ = ["make_transport", "transport"]

KOMBU = "redis-kombu"
CASES: dict[str, Case] = {
    **TRANSPORTS,
    KOMBU: Case(_make_kombu, _inject_kombu, (pytest.mark.redis,), _cleanup_redis),
}
#: Brokers whose ``oldest_message_age`` is ``None`` by design, and why.
AGE_UNKNOWN = {
    "amqp": "AMQP gives a queue's depth, not its head's age (no management API used)",
    KOMBU: "kombu's lists keep no time per message",
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


async def wait_for_age(
    transport: Transport, queue: str, check: object, what: str, timeout: float = 5.0
) -> float:
    """Poll ``oldest_message_age`` until ``check(age)``; the age then (fails past timeout)."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while True:
        age = await transport.oldest_message_age(queue)
        if age is not None and check(age):
            return age
        assert time.monotonic() < deadline, f"{what}: the age is still {age}"
        await asyncio.sleep(0.05)


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


# -- oldest_message_age ------------------------------------------------------------------------
@run_async
async def test_oldest_age_of_an_empty_queue_is_zero(transport: Transport, broker: str) -> None:
    await declared(transport, "q")
    expected = None if broker in AGE_UNKNOWN else 0.0
    assert await transport.oldest_message_age("q") == expected
    assert await transport.oldest_message_age("never-declared") == expected


@run_async
async def test_oldest_age_grows_while_a_message_waits_and_ends_when_taken(
    transport: Transport, broker: str
) -> None:
    """Ready messages age from their publish (Redis counts whole seconds: up to one more);
    a leased message is not waiting, so the age falls back to 0."""
    await declared(transport, "q")
    sent = time.time()
    await transport.publish_batch([out("a"), out("b")])
    if broker in AGE_UNKNOWN:
        assert await transport.oldest_message_age("q") is None, AGE_UNKNOWN[broker]
        await transport.ack(await transport.get(["q"], 2, timeout=5))
        return
    age = await wait_for_age(transport, "q", lambda a: a >= 0.2, "a ready message to age")
    assert age <= time.time() - sent + 1.0
    taken = await transport.get(["q"], 2, timeout=5)
    assert len(taken) == 2
    assert await transport.oldest_message_age("q") == 0.0
    await transport.requeue(taken[:1])  # ready again from now
    assert (await transport.oldest_message_age("q") or 0.0) <= 1.0
    await transport.ack(await transport.get(["q"], 1, timeout=5))
    await transport.ack(taken[1:])


@run_async
async def test_a_delayed_message_ages_from_when_it_falls_due(
    transport: Transport, broker: str
) -> None:
    if broker in AGE_UNKNOWN:
        pytest.skip(AGE_UNKNOWN[broker])
    await declared(transport, "q")
    due = time.time() + 0.4
    await transport.publish(out("later", due_at=due))
    assert await transport.oldest_message_age("q") == 0.0  # not deliverable yet
    age = await wait_for_age(transport, "q", lambda a: a > 0, "the delayed message to fall due")
    assert time.time() >= due - 0.05
    assert age <= time.time() - due + 0.1  # from when it fell due, not from its publish
    await transport.ack(await transport.get(["q"], 1, timeout=5))


# -- remove_dead_letters -----------------------------------------------------------------------
async def dead_lettered(transport: Transport, queue: str, count: int) -> list[DeadLetter]:
    await transport.publish_batch([out(f"d{i}", routing_key=queue) for i in range(count)])
    taken: list[Delivery] = []
    while len(taken) < count:
        more = await transport.get([queue], count, timeout=5)
        assert more
        taken += more
    await transport.reject(taken, "chosen for the test")
    letters = await transport.dead_letters(queue, 100)
    assert len(letters) == count
    return letters


@run_async
async def test_dead_letters_have_ids_stable_between_reads(transport: Transport) -> None:
    await declared(transport, "q")
    letters = await dead_lettered(transport, "q", 3)
    ids = [letter.id for letter in letters]
    assert None not in ids and len(set(ids)) == 3
    assert [letter.id for letter in await transport.dead_letters("q", 100)] == ids


@run_async
async def test_remove_dead_letters_removes_exactly_those_chosen(transport: Transport) -> None:
    await declared(transport, "q", "other")
    letters = await dead_lettered(transport, "q", 4)
    [kept_other] = await dead_lettered(transport, "other", 1)
    chosen = [letters[0], letters[2]]
    assert await transport.remove_dead_letters("q", chosen) == 2
    left = await transport.dead_letters("q", 100)
    assert [letter.id for letter in left] == [letters[1].id, letters[3].id]
    assert [letter.payload for letter in left] == [letters[1].payload, letters[3].payload]
    assert await transport.remove_dead_letters("q", chosen) == 0  # gone already: no error
    assert await transport.remove_dead_letters("other", [letters[1]]) == 0  # not that queue's
    assert await transport.remove_dead_letters("q", []) == 0
    assert [x.id for x in await transport.dead_letters("other", 100)] == [kept_other.id]
    assert await transport.remove_dead_letters("q", left) == 2
    assert await transport.dead_letters("q", 100) == []


def test_the_defaults_of_the_base_class() -> None:
    """A transport that implements none of the three: nothing held, age unknown, nothing
    removed (the caller hides what it handled)."""
    from celeriac.transports.memory import MemoryTransport

    class Bare(MemoryTransport):
        oldest_message_age = Transport.oldest_message_age
        remove_dead_letters = Transport.remove_dead_letters

    async def body() -> None:
        bare = Bare("memory://bare-defaults")
        await bare.stop_consuming("q")
        assert await bare.oldest_message_age("q") is None
        letter = DeadLetter("q", b"x", "why", 1, 0.0, "1")
        assert await bare.remove_dead_letters("q", [letter]) == 0
        await bare.close()

    asyncio.run(body())
