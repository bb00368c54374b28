"""The rest of a fetching child's claim, held in order while the first message runs, and given
back to the head of its queue if that run lasts.

Why: a prefork child that claims several messages when its queue is deep (up to 16, see
:func:`.fetching.claim_size`) makes fewer claims, one Redis script call and one round trip for
several tasks. Drains of 20,000 no-op tasks (prefork ``-c 2``, a 2-core machine, a Redis of
their own, interleaved runs, medians): claiming up to four, 5,716 tasks/s against 5,040 for
pairs (six runs each), 175 us of worker CPU per task against 196, Redis 77 against 92; in
another sitting (four runs each) up to 4, 8 and 16: 5,157, 5,868 and 6,542 tasks/s, worker CPU
201, 176 and 153 us, Redis 86, 74 and 62; in a third, up to 8, 16 and 32: 6,123, 6,271 and
6,108 tasks/s (161-164 us, 66-69 us): flat past 8 to 16. (Pairs against one at a time, earlier:
3,806-3,955 tasks/s against 3,342-3,651.) But a message held behind a
task that runs long would wait for it while another child idles, which is the unfair dispatch
that Celery's prefetch is known for (and its ``-O fair`` avoids). So a thread watches what is
held and, once it has been held for :data:`HOLD_LIMIT`, gives all of it back to its places in
its queues (the head, as a rule), where the first child free claims it; the child that held it
claims one at a time until its tasks are short again.

The thread polls every :data:`TICK` rather than being woken at each hold: a wake-up per claim
would add a futex call and a thread switch to every batch. It parks after :data:`PARK_AFTER`
with nothing held, and a hold wakes it. The lock it holds while it gives messages back is the
one the child's main thread takes to start the next one, so a held message is run or given
back, never both. What is held is also listed on the child's slot of the board (``board``:
:meth:`.board.SlotWriter.hold`, and :meth:`~.board.SlotWriter.took` before each one taken), so
that when the child is killed while it holds messages (a crash within the hold limit), the
worker gives them back at once rather than leaving them leased until their lease ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from celeriac.transports.base import Delivery

logger = logging.getLogger("celeriac.worker")

#: Seconds a message is held before it is given back.
HOLD_LIMIT = 0.02
#: How often the thread looks at a held message.
TICK = 0.01
#: Seconds with nothing held after which the thread parks until the next hold.
PARK_AFTER = 1.0


class Listing(Protocol):
    """Where what is held is listed for the worker to see (a child's slot of the board)."""

    def hold(self, held: list[tuple[str, Any]]) -> bool: ...

    def took(self, count: int) -> None: ...


class Holder:
    """The rest of a claim, held in order (see the module docstring); ``release`` gives them
    back, called from the watching thread; ``board`` lists them for the worker; ``limit`` and
    ``tick`` are the module's :data:`HOLD_LIMIT` and :data:`TICK` unless given."""

    def __init__(
        self,
        release: Callable[[list[Delivery]], None],
        limit: float | None = None,
        tick: float | None = None,
        board: Listing | None = None,
    ) -> None:
        self._release = release
        self._board = board
        self._listed = 0  # how many of the held messages the board lists (taken or not)
        self._taken = 0
        self._limit = HOLD_LIMIT if limit is None else limit
        self._tick = TICK if tick is None else tick
        self._cond = threading.Condition(threading.Lock())
        self._held: deque[Delivery] = deque()
        self._since = 0.0
        self._parked = False
        self._closed = False
        self._thread: threading.Thread | None = None
        #: Messages given back so far.
        self.released = 0

    def hold(self, deliveries: Sequence[Delivery]) -> None:
        """Hold ``deliveries``, to be taken in this order (the caller runs another one now)."""
        with self._cond:
            if self._held:
                raise RuntimeError("messages are held already")
            self._held.extend(deliveries)
            self._since = time.monotonic()
            if self._board is not None:
                listed = self._board.hold([(d.queue, d.tag) for d in deliveries])
                self._listed, self._taken = (len(deliveries) if listed else 0), 0
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="celeriac-holder", daemon=True
                )
                self._thread.start()
            elif self._parked:
                self._cond.notify()

    def take(self) -> Delivery | None:
        """The next held message, now the caller's to run; None if there is none (given
        back, or all taken)."""
        with self._cond:
            if not self._held:
                return None
            self._took(1)
            return self._held.popleft()

    def take_all(self) -> list[Delivery]:
        """Every message still held, now the caller's (to give back)."""
        with self._cond:
            return self._drain()

    def close(self) -> list[Delivery]:
        """Stop watching; the messages still held, for the caller to give back."""
        with self._cond:
            self._closed = True
            held = self._drain()
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(5.0)
        return held

    def _drain(self) -> list[Delivery]:
        """Empty the hold, returning what it held (under the lock)."""
        held = list(self._held)
        self._held.clear()
        self._took(len(held))
        return held

    def _took(self, count: int) -> None:
        """``count`` more held messages are the caller's: off the board's list first (a
        message listed there is given back if the child dies; one taken is not)."""
        if count and self._listed:
            self._taken += count
            assert self._board is not None
            self._board.took(self._taken)

    def _watch(self) -> None:
        cond = self._cond
        with cond:
            last_held = time.monotonic()
            while not self._closed:
                now = time.monotonic()
                if self._held:
                    last_held = now
                    if now - self._since >= self._limit:
                        # under the lock: the main thread cannot take one of them now
                        held = self._drain()
                        self.released += len(held)
                        try:
                            self._release(held)
                        except Exception:  # their leases run out and they come back: not lost
                            logger.exception("giving back held messages failed")
                        continue
                elif now - last_held >= PARK_AFTER:
                    self._parked = True
                    cond.wait()
                    self._parked = False
                    last_held = time.monotonic()
                    continue
                cond.wait(self._tick)
