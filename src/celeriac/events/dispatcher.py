"""The event dispatcher: Celery's events, sent from one event loop (a worker's), cheaply.

Sending an event costs the caller a dict and an append. Task events are buffered: each 24 make
one message (a JSON list, routing key ``task.multi``, as Celery batches them), and ``linger``
seconds (5 ms) after the first event of a batch, every message made meanwhile goes out in one
publish call, the last batch partly full. Other events (``worker.heartbeat``) go out at once,
one per message under their own routing key. Celery flushes on the next tick of its event
loop; an asyncio loop turns so often that flushing on its next turn made batches of two or
three events and about one publish per task, where one call every few milliseconds carries
them all: events cost a worker per publish call far more than per event.

One sender task publishes in order with :meth:`Transport.publish_transient`, so a listener sees
each sender's events in the order they were sent, and nothing is ever queued for a listener
that is not there.

Bounded: when the broker is slower than the events (or down), at most ``max_pending`` messages
wait here; past that the oldest are dropped and counted in :attr:`EventDispatcher.dropped`.
Events are a stream for monitors, not a record; a worker never slows down or grows for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from celeriac.events.clock import LamportClock
from celeriac.events.event import (
    MULTI_SUFFIX,
    Event,
    event_exchange,
    event_message,
    routing_key,
    utcoffset,
)
from celeriac.protocol.message import Message
from celeriac.routing import Exchange
from celeriac.transports.base import Transport
from celeriac.utils.outage import Outage

logger = logging.getLogger("celeriac.events")

#: Celery's ``buffer_limit``: a batch goes out once this many task events are buffered.
BUFFER_LIMIT = 24
#: Seconds a batch waits for more events at most (see the module docstring).
LINGER = 0.005
#: Messages waiting for the broker before the oldest are dropped.
MAX_PENDING = 1_000
#: Messages of one routing key handed to one ``publish_transient`` call.
PUBLISH_CHUNK = 64


def supports_events(transport: Transport) -> bool:
    """Whether the transport implements the transient fan-out events travel on."""
    return type(transport).publish_transient is not Transport.publish_transient


class EventDispatcher:
    """Sends events for ``hostname`` on ``transport`` (which the caller connects and closes).

    ``groups``: the event groups sent (``{"worker"}`` sends only ``worker-*`` events); ``None``
    sends every group. :meth:`start` must run on the loop that :meth:`send` is called from.
    """

    def __init__(
        self,
        transport: Transport,
        hostname: str,
        *,
        exchange: Exchange | None = None,
        groups: Iterable[str] | None = None,
        clock: LamportClock | None = None,
        buffer_groups: Iterable[str] = ("task",),
        buffer_limit: int = BUFFER_LIMIT,
        linger: float = LINGER,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.transport = transport
        self.hostname = hostname
        self.exchange = exchange or event_exchange()
        self.groups: set[str] | None = set(groups) if groups is not None else None
        self.clock = clock or LamportClock()
        self.buffer_groups = frozenset(buffer_groups)
        self.buffer_limit = buffer_limit
        self.linger = linger
        self.max_pending = max_pending
        self.pid = os.getpid()
        #: Hours west of UTC; refreshed by :meth:`refresh` (the heartbeat calls it), so a change
        #: of daylight-saving time shows within one heartbeat without a syscall per event.
        self.utcoffset = utcoffset()
        #: False when the transport has no transient fan-out (then nothing is sent).
        self.enabled = supports_events(transport)
        #: Events sent, messages and publish calls they took, events dropped (broker slow or
        #: down).
        self.events_sent = 0
        self.messages_sent = 0
        self.publishes = 0
        self.dropped = 0
        self._buffers: dict[str, list[Event]] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._pending: deque[tuple[str, Message, int]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sender: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outage = Outage("event publishing", logger)

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the sender task on the running loop."""
        self._loop = asyncio.get_running_loop()
        if not self.enabled:
            logger.warning(
                "events are not sent: %s has no transient fan-out", type(self.transport).__name__
            )
            return
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_loop(), name="celeriac-events")

    async def close(self, timeout: float = 2.0) -> None:
        """Send what is buffered, wait up to ``timeout`` seconds for it to be published, stop."""
        self.flush()
        if self._sender is not None:
            await self.wait_sent(timeout)
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
        self.enabled = False

    async def wait_sent(self, timeout: float | None = None) -> bool:
        """Wait until every message handed to the sender was published (or given up); False
        if that took longer than ``timeout`` seconds. Buffered events are not flushed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def refresh(self) -> None:
        self.utcoffset = utcoffset()

    # -- groups -----------------------------------------------------------------------------
    def sends(self, group: str) -> bool:
        """Whether events of ``group`` are sent now."""
        return self.enabled and (self.groups is None or group in self.groups)

    def enable_group(self, group: str) -> None:
        if self.groups is not None:
            self.groups.add(group)

    def disable_group(self, group: str) -> None:
        if self.groups is None:
            self.groups = set()
        self.groups.discard(group)
        self._buffers.pop(group, None)

    # -- sending ----------------------------------------------------------------------------
    def send(self, type_: str, **fields: Any) -> None:
        """Send an event of ``type_`` with ``fields`` (JSON values), if its group is sent.

        Celery's envelope fields come first (``hostname``, ``utcoffset``, ``pid``, ``clock``),
        then ``fields``, then ``timestamp`` and ``type``.
        """
        group = type_.partition("-")[0]
        if not self.enabled or (self.groups is not None and group not in self.groups):
            return
        event = {
            "hostname": self.hostname,
            "utcoffset": self.utcoffset,
            "pid": self.pid,
            "clock": self.clock.forward(),
            **fields,
            "timestamp": time.time(),
            "type": type_,
        }
        if group in self.buffer_groups:
            buffer = self._buffers.get(group)
            if buffer is None:
                buffer = self._buffers[group] = []
            buffer.append(event)
            if len(buffer) >= self.buffer_limit:  # a full batch waits for the others' timer
                self._flush_group(group, wake=False)
            if self._flush_handle is None and self._loop is not None:
                self._flush_handle = (
                    self._loop.call_later(self.linger, self.flush)
                    if self.linger > 0
                    else self._loop.call_soon(self.flush)
                )
        else:
            self._enqueue(routing_key(type_), event_message(self.hostname, event), 1)

    def flush(self) -> None:
        """Hand every buffered batch to the sender now."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for group, buffer in self._buffers.items():
            if buffer:
                self._flush_group(group, buffer, wake=False)
        if self._pending:
            self._wake.set()

    def _flush_group(
        self, group: str, buffer: list[Event] | None = None, wake: bool = True
    ) -> None:
        events = self._buffers[group] if buffer is None else buffer
        self._buffers[group] = []
        message = event_message(self.hostname, events)
        self._enqueue(group + MULTI_SUFFIX, message, len(events), wake)

    def _enqueue(self, key: str, message: Message, count: int, wake: bool = True) -> None:
        """Hand a message to the sender; it publishes at once when woken (worker events, a
        flush), else with the next flush, so that one publish call carries every batch made
        meanwhile: the cost of events is per call far more than per event."""
        if self._sender is None:
            self.dropped += count  # not started, or closed: nobody would publish it
            return
        self._pending.append((key, message, count))
        while len(self._pending) > self.max_pending:
            self.dropped += self._pending.popleft()[2]
        self._idle.clear()
        if wake or len(self._pending) >= PUBLISH_CHUNK:
            self._wake.set()

    async def _send_loop(self) -> None:
        pending = self._pending
        while True:
            if not pending:
                self._idle.set()
            await self._wake.wait()
            self._wake.clear()
            while pending:
                await self._publish_some(pending)

    async def _publish_some(self, pending: deque[tuple[str, Message, int]]) -> None:
        """Publish the oldest messages of one routing key in one call (up to PUBLISH_CHUNK)."""
        key, message, count = pending.popleft()
        messages = [message]
        while pending and pending[0][0] == key and len(messages) < PUBLISH_CHUNK:
            _, more, more_count = pending.popleft()
            messages.append(more)
            count += more_count
        try:
            await self.transport.publish_transient(self.exchange, key, messages)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._outage.failed(exc, "publishing events (dropped)")
            self.dropped += count
            await asyncio.sleep(0.5)  # a broker that is down is not asked 1,000 times/s
            return
        self._outage.ok()
        self.events_sent += count
        self.messages_sent += len(messages)
        self.publishes += 1
