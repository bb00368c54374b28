"""The event receiver: the events published from now on, as dicts, sync or async.

It listens with :meth:`Transport.listen` (nothing is declared for it that outlives it: close it,
or let the process die, and the broker keeps nothing of it), accepts a message whose body is one
event or a list of them (Celery's ``task.multi`` batches), and fills in what Celery's receiver
adds: ``local_received`` (when it arrived here), ``clock`` when the sender sent none (a
``task-sent`` always gets the receiver's own: clients never synchronise theirs), and, with
``localize``, the ``timestamp`` moved into this host's time zone.

>>> async with EventReceiver(app.create_transport()) as events:
...     async for event in events:
...         print(event["type"], event["hostname"])

>>> for event in EventReceiver(app.create_transport()).iter(timeout=5):  # sync, for scripts
...     print(event)

``handlers`` maps event types to callbacks, ``"*"`` catching the rest, for Celery's
``capture()`` style.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

from celeriac.errors import DecodeError
from celeriac.events.clock import LamportClock
from celeriac.events.event import (
    EVENT_EXCHANGE_NAME,
    Event,
    adjust_timestamp,
    decode_body,
    event_exchange,
)
from celeriac.transports.base import Listener, Transport

logger = logging.getLogger("celeriac.events")

#: Celery's ``CLIENT_CLOCK_SKEW``: a client's ``task-sent`` is dated just before now.
CLIENT_CLOCK_SKEW = -1
Handler = Callable[[Event], Any]


class EventReceiver:
    """Receives events on ``transport``, which it connects on open and closes on close (give it
    a transport of its own: ``app.create_transport()``).

    ``patterns`` select routing keys as AMQP topics do (``task.#``, ``worker.*``; the default
    ``#`` is every event); ``buffer`` bounds what waits here unread (past it the oldest are
    dropped and counted in :attr:`dropped`). ``wakeup`` is awaited once listening: Celery's
    receivers ask every worker for a heartbeat then (the ``heartbeat`` control command), so that
    workers show up at once rather than at their next beat; a wakeup that fails is only logged.
    """

    def __init__(
        self,
        transport: Transport,
        handlers: Mapping[str, Handler] | None = None,
        *,
        exchange: str = EVENT_EXCHANGE_NAME,
        patterns: Sequence[str] = ("#",),
        clock: LamportClock | None = None,
        localize: bool = True,
        buffer: int = 10_000,
        wakeup: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.transport = transport
        self.handlers = dict(handlers or {})
        self.exchange = event_exchange(exchange)
        self.patterns = tuple(patterns)
        self.clock = clock or LamportClock()
        self.localize = localize
        self.buffer = buffer
        self.wakeup = wakeup
        #: Messages that were not events (counted, logged at DEBUG).
        self.malformed = 0
        self._listener: Listener | None = None
        self._ready: deque[Event] = deque()

    # -- life cycle -------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect and start listening (events published before this returns may be missed)."""
        if self._listener is not None:
            return
        await self.transport.connect()
        listener = self.transport.listen(self.exchange, self.patterns, buffer=self.buffer)
        try:
            await listener.open()
        except BaseException:
            await self.transport.close()
            raise
        self._listener = listener
        if self.wakeup is not None:
            try:
                await self.wakeup()
            except Exception as exc:  # the events come anyway, at the workers' next beat
                logger.warning("could not ask the workers for a heartbeat: %s", exc)

    async def close(self) -> None:
        """Stop listening and release the connection: nothing of this receiver stays."""
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                await listener.close()
            finally:
                await self.transport.close()

    async def __aenter__(self) -> EventReceiver:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def dropped(self) -> int:
        """Events the broker-side listener dropped because this receiver fell behind."""
        return self._listener.dropped if self._listener is not None else 0

    # -- receiving --------------------------------------------------------------------------
    async def next(self, timeout: float | None = None) -> Event | None:
        """The next event, waiting up to ``timeout`` seconds (None: for ever); None if none
        came in time."""
        if self._ready:
            return self._ready.popleft()
        if self._listener is None:
            raise RuntimeError("EventReceiver.next() before open()")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            message = await self._listener.get(remaining)
            if message is None:
                return None
            try:
                bodies = decode_body(message)
            except DecodeError as exc:
                self.malformed += 1
                logger.debug("ignoring a message on the event exchange: %s", exc)
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                continue
            self._ready.extend(self.event_from_message(body) for body in bodies)
            return self._ready.popleft()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[Event]:
        while True:
            event = await self.next()
            if event is not None:
                yield event

    def event_from_message(self, event: Event) -> Event:
        """Fill in what Celery's receiver adds (see the module docstring); returns ``event``."""
        if event["type"] == "task-sent":
            sent_at = event["clock"] = (self.clock.value or 1) + CLIENT_CLOCK_SKEW
            self.clock.adjust(sent_at)
        else:
            clock = event.get("clock")
            if isinstance(clock, int):
                self.clock.adjust(clock)
            else:
                event["clock"] = self.clock.forward()
        if self.localize:
            offset, timestamp = event.get("utcoffset"), event.get("timestamp")
            if isinstance(offset, int | float) and isinstance(timestamp, int | float):
                event["timestamp"] = adjust_timestamp(timestamp, offset)
        event["local_received"] = time.time()
        return event

    def process(self, event: Event) -> None:
        """Hand ``event`` to its handler (by type, else ``"*"``), if there is one."""
        handler = self.handlers.get(event["type"]) or self.handlers.get("*")
        if handler is not None:
            handler(event)

    async def acapture(self, limit: int | None = None, timeout: float | None = None) -> int:
        """Receive and :meth:`process` events until ``limit`` were handled or none came for
        ``timeout`` seconds; returns how many were. Opens and closes the receiver."""
        count = 0
        async with self:
            while limit is None or count < limit:
                event = await self.next(timeout)
                if event is None:
                    break
                self.process(event)
                count += 1
        return count

    # -- synchronous use --------------------------------------------------------------------
    def iter(self, timeout: float | None = None, limit: int | None = None) -> Iterator[Event]:
        """The events, for synchronous code: ends after ``limit`` events or when none came for
        ``timeout`` seconds (None: never). Runs a private event loop; leaving the loop early
        (``break``) closes the receiver."""
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self.open())
            count = 0
            while limit is None or count < limit:
                event = loop.run_until_complete(self.next(timeout))
                if event is None:
                    return
                count += 1
                yield event
        finally:
            try:
                loop.run_until_complete(self.close())
            finally:
                loop.close()

    def __iter__(self) -> Iterator[Event]:
        return self.iter()

    def capture(self, limit: int | None = None, timeout: float | None = None) -> int:
        """Celery's ``capture()``: :meth:`process` each event (see :meth:`iter` for the
        arguments); returns how many were handled."""
        count = 0
        for event in self.iter(timeout, limit):
            self.process(event)
            count += 1
        return count
