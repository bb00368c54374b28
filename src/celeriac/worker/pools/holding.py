"""The second message of a fetching child's claim, held while the first runs, and given back
to the head of its queue if that run lasts.

Why: a prefork child that claims two messages when its queue is deep makes half the claims, one
Redis script call and one round trip for two tasks: a drain of 20,000 no-op tasks (prefork
``-c 2``, a 2-core machine, three interleaved pairs) ran at 3,806-3,955 tasks/s against
3,342-3,651 claiming one at a time, with 268-284 us of worker CPU per task against 283-308 and
105 of Redis' against 124-140. But a message held behind a task that runs
long would wait for it while another child idles, which is the unfair dispatch that Celery's
prefetch is known for (and its ``-O fair`` avoids). So a thread watches the held message and,
once it has been held for :data:`HOLD_LIMIT`, gives it back to its own place in its queue (the
head, as a rule), where the first child free claims it; the child that held it claims one at a
time until its tasks are short again.

The thread polls every :data:`TICK` rather than being woken at each hold: a wake-up per held
message would cost about what the pair saves. It parks after :data:`PARK_AFTER` with nothing
held, and a hold wakes it. The lock it holds while it gives a message back is the one the
child's main thread takes to start the message, so a held message is run or given back, never
both. A child killed while it holds a message (a crash within the hold limit) leaves it leased:
it comes back when the lease ends, as the message it ran does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from celeriac.transports.base import Delivery

logger = logging.getLogger("celeriac.worker")

#: Seconds a message is held before it is given back.
HOLD_LIMIT = 0.02
#: How often the thread looks at a held message.
TICK = 0.01
#: Seconds with nothing held after which the thread parks until the next hold.
PARK_AFTER = 1.0


class Holder:
    """At most one held message (see the module docstring); ``release`` gives one back,
    called from the watching thread; ``limit`` and ``tick`` are the module's
    :data:`HOLD_LIMIT` and :data:`TICK` unless given."""

    def __init__(
        self,
        release: Callable[[Delivery], None],
        limit: float | None = None,
        tick: float | None = None,
    ) -> None:
        self._release = release
        self._limit = HOLD_LIMIT if limit is None else limit
        self._tick = TICK if tick is None else tick
        self._cond = threading.Condition(threading.Lock())
        self._held: Delivery | None = None
        self._since = 0.0
        self._parked = False
        self._closed = False
        self._thread: threading.Thread | None = None
        #: Messages given back so far.
        self.released = 0

    def hold(self, delivery: Delivery) -> None:
        """Hold ``delivery`` (the caller runs another one now)."""
        with self._cond:
            if self._held is not None:
                raise RuntimeError("a message is held already")
            self._held = delivery
            self._since = time.monotonic()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="celeriac-holder", daemon=True
                )
                self._thread.start()
            elif self._parked:
                self._cond.notify()

    def take(self) -> Delivery | None:
        """The held message, now the caller's to run; None if there is none (given back)."""
        with self._cond:
            held, self._held = self._held, None
            return held

    def close(self) -> Delivery | None:
        """Stop watching; the message still held, if any, for the caller to give back."""
        with self._cond:
            self._closed = True
            held, self._held = self._held, None
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(5.0)
        return held

    def _watch(self) -> None:
        cond = self._cond
        with cond:
            last_held = time.monotonic()
            while not self._closed:
                now = time.monotonic()
                held = self._held
                if held is not None:
                    last_held = now
                    if now - self._since >= self._limit:
                        self._held = None  # under the lock: the main thread cannot take it now
                        self.released += 1
                        try:
                            self._release(held)
                        except Exception:  # its lease runs out and it comes back: not lost
                            logger.exception("giving back a held message failed")
                        continue
                elif now - last_held >= PARK_AFTER:
                    self._parked = True
                    cond.wait()
                    self._parked = False
                    last_held = time.monotonic()
                    continue
                cond.wait(self._tick)
