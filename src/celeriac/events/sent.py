"""``task-sent``: the event a producer sends for each task it sends, when
``task_send_sent_event`` is on (Celery's setting; off by default, and then none of this runs).

The events are built from what the send already holds (the message's headers and where it was
routed), so a send with the setting on costs a dict per task and one publish per send or batch:
a batch (``send_many``) goes out as one ``task.multi`` message per 24 events, a single send as
one ``task.sent`` message, as Celery sends it. The sender is named ``gen<pid>@<host>`` (Celery's
name for a client) and has a Lamport clock of its own, which receivers ignore for ``task-sent``.

A publisher owns a broker connection on a loop of its own thread (one per process: a child of
a fork makes a new one), so sync and async senders alike publish without blocking an event
loop on the other's connection; a publish that fails is logged once per outage and never fails
the send.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from celeriac.events.clock import LamportClock
from celeriac.events.dispatcher import BUFFER_LIMIT, supports_events
from celeriac.events.event import Event, anon_nodename, event_exchange, event_message, utcoffset
from celeriac.protocol.message import Message
from celeriac.transports.base import Outgoing, Transport
from celeriac.utils.outage import Outage
from celeriac.utils.portal import Portal

logger = logging.getLogger("celeriac.events")

#: ``(message, the queue it was routed to)``: what a send hands over.
Sent = tuple[Outgoing, str | None]


def sent_events(
    sends: Iterable[Sent], hostname: str, clock: LamportClock, offset: float
) -> list[Event]:
    """Celery's ``task-sent`` event for each send (``as_task_v2``'s fields)."""
    pid = os.getpid()
    now = time.time()
    events = []
    for item, queue in sends:
        headers = item.message.headers
        events.append(
            {
                "hostname": hostname,
                "utcoffset": offset,
                "pid": pid,
                "clock": clock.forward(),
                "uuid": headers.get("id"),
                "root_id": headers.get("root_id"),
                "parent_id": headers.get("parent_id"),
                "name": headers.get("task"),
                "args": headers.get("argsrepr"),
                "kwargs": headers.get("kwargsrepr"),
                "retries": headers.get("retries", 0),
                "eta": headers.get("eta"),
                "expires": headers.get("expires"),
                "queue": queue,
                "exchange": item.exchange,
                "routing_key": item.routing_key,
                "timestamp": now,
                "type": "task-sent",
            }
        )
    return events


def sent_messages(hostname: str, events: Sequence[Event]) -> list[tuple[str, list[Message]]]:
    """``(routing key, messages)``: one event alone as ``task.sent``, more as ``task.multi``
    lists of up to 24."""
    if len(events) == 1:
        return [("task.sent", [event_message(hostname, events[0])])]
    chunks = [list(events[i : i + BUFFER_LIMIT]) for i in range(0, len(events), BUFFER_LIMIT)]
    return [("task.multi", [event_message(hostname, chunk) for chunk in chunks])]


class SentEventPublisher:
    """Publishes a process's ``task-sent`` events (see the module docstring)."""

    def __init__(self, make_transport: Callable[[], Transport], exchange: str) -> None:
        self.make_transport = make_transport
        self.exchange = event_exchange(exchange)
        self.hostname = anon_nodename()
        self.clock = LamportClock()
        self.pid = os.getpid()
        self._portal = Portal("celeriac-sent-events")
        self._transport: Transport | None = None
        self._connecting: asyncio.Lock | None = None  # made on the publisher's loop
        self._outage = Outage("task-sent events", logger)
        self._unsupported = False

    def publish(self, sends: Sequence[Sent]) -> None:
        """Send the ``task-sent`` events of ``sends`` from synchronous code."""
        work = self._work(sends)
        if work is not None:
            try:
                self._portal.call(work)
            except Exception as exc:  # never the send's failure
                self._outage.failed(exc, "publishing task-sent")

    async def apublish(self, sends: Sequence[Sent]) -> None:
        """The async twin of :meth:`publish`: awaits the publisher's loop, never blocks."""
        work = self._work(sends)
        if work is not None:
            try:
                future = asyncio.run_coroutine_threadsafe(work, self._portal.loop)
                await asyncio.wrap_future(future)
            except Exception as exc:
                self._outage.failed(exc, "publishing task-sent")

    def _work(self, sends: Sequence[Sent]) -> Any:
        if self._unsupported or not sends:
            return None
        events = sent_events(sends, self.hostname, self.clock, utcoffset())
        return self._publish(sent_messages(self.hostname, events))

    async def _publish(self, batches: list[tuple[str, list[Message]]]) -> None:
        transport = await self._connected()
        if transport is None:
            return
        for key, messages in batches:
            await transport.publish_transient(self.exchange, key, messages)
        self._outage.ok()

    async def _connected(self) -> Transport | None:
        if self._transport is not None:
            return self._transport
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # two sends at once make one connection
            if self._transport is None:
                transport = self.make_transport()
                if not supports_events(transport):
                    self._unsupported = True
                    logger.warning(
                        "task_send_sent_event is on, but %s has no transient fan-out: "
                        "no task-sent events",
                        type(transport).__name__,
                    )
                    return None
                await transport.connect()
                self._transport = transport
        return self._transport

    def close(self) -> None:
        """Close the connection and the publisher's loop."""
        transport, self._transport = self._transport, None
        if transport is not None:
            try:
                self._portal.call(transport.close(), timeout=5)
            except Exception as exc:
                logger.debug("closing the task-sent publisher: %s", exc)
        self._portal.close()
