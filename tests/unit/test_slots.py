"""The consumer's slot semaphore: FIFO hand-over, cancellation that never loses a slot, resize."""

from __future__ import annotations

import asyncio

from celeriac.worker.consumer import Slots


def test_slots_are_handed_over_in_order_and_never_lost() -> None:
    async def go() -> None:
        slots = Slots(1)
        await slots.acquire()
        order: list[str] = []

        async def take(name: str) -> None:
            await slots.acquire()
            order.append(name)

        first = asyncio.create_task(take("first"))
        gone = asyncio.create_task(take("cancelled"))
        last = asyncio.create_task(take("last"))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        await slots.release()  # goes to "first", skipping nobody
        await first
        assert order == ["first"] and slots.in_use == 1
        await slots.release()  # "cancelled" left the queue: "last" gets it
        await last
        assert order == ["first", "last"] and slots.in_use == 1
        await slots.release()
        assert slots.in_use == 0

    asyncio.run(go())


def test_a_waiter_cancelled_after_being_handed_a_slot_passes_it_on() -> None:
    async def go() -> None:
        slots = Slots(1)
        await slots.acquire()
        first = asyncio.create_task(slots.acquire())
        second = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0)
        await slots.release()  # handed to "first"...
        first.cancel()  # ...which is cancelled before it runs again
        await asyncio.gather(first, return_exceptions=True)
        await asyncio.wait_for(second, 1)  # the slot went on to "second"
        assert slots.in_use == 1

    asyncio.run(go())


def test_growing_wakes_as_many_waiters_as_new_slots() -> None:
    async def go() -> None:
        slots = Slots(1)
        await slots.acquire()
        waiting = [asyncio.create_task(slots.acquire()) for _ in range(3)]
        await asyncio.sleep(0)
        await slots.resize(3)
        done, pending = await asyncio.wait(waiting, timeout=1)
        assert len(done) == 2 and len(pending) == 1 and slots.in_use == 3
        await slots.release()
        await asyncio.wait_for(pending.pop(), 1)
        assert slots.in_use == 3

    asyncio.run(go())
