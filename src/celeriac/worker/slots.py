"""The pool's free places as the consumer sees them: a resizable, FIFO counting semaphore."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class Slots:
    """A resizable counting semaphore: the pool's free places, FIFO, growable by the autoscaler.

    Every message takes and gives back a slot, so this is on the hot path: a free slot is taken
    without suspending, and a released one is handed straight to the first waiter (its future
    is resolved with the slot already counted), with no lock and no condition to re-check.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.in_use < self.size and not self._waiters:
            self.in_use += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.in_use -= 1  # handed a slot while being cancelled: pass it on
                self._hand_over()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    async def release(self) -> None:
        self.in_use -= 1
        self._hand_over()

    async def resize(self, size: int) -> None:
        self.size = size
        self._hand_over()

    def _hand_over(self) -> None:
        while self._waiters and self.in_use < self.size:
            waiter = self._waiters.popleft()
            if waiter.done():  # cancelled while it waited
                continue
            self.in_use += 1
            waiter.set_result(None)
