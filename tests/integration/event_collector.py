"""Listen to the event exchange from a test: every message as it came (routing key, header, body).

A :class:`Collector` runs a real :meth:`Transport.listen` on an event loop of its own thread, so a
synchronous test can start workers, send tasks and wait (on a condition variable, with a
deadline) for the events it expects; it keeps the routing key and the shape of each message, which
a test of batching needs and :class:`~celeriac.events.EventReceiver` hides.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celeriac.events.event import decode_body, event_exchange
from celeriac.transports.base import Transport

Event = dict[str, Any]


@dataclass(frozen=True)
class Received:
    routing_key: str
    hostname: str | None
    is_list: bool
    events: list[Event]


class Collector:
    """Listens on ``transport`` (its own: the collector connects and closes it) until closed."""

    def __init__(self, transport: Transport, patterns: tuple[str, ...] = ("#",)) -> None:
        self.transport = transport
        self.patterns = patterns
        self.messages: list[Received] = []
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._open = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, name="event-collector", daemon=True)
        self._thread.start()
        if not self._open.wait(15):
            raise AssertionError("the event listener did not open within 15 s")
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._task = loop.create_task(self._read())
            loop.run_until_complete(self._task)
        except (asyncio.CancelledError, Exception) as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self.error = exc
        finally:
            self._open.set()
            loop.close()

    async def _read(self) -> None:
        await self.transport.connect()
        listener = self.transport.listen(event_exchange(), self.patterns)
        try:
            await listener.open()
            self._open.set()
            while True:
                message = await listener.get(None)
                if message is None:
                    return
                info = message.properties.get("delivery_info") or {}
                hostname = message.headers.get("hostname")
                body_is_list = message.body.lstrip().startswith(b"[")
                received = Received(
                    str(info.get("routing_key")),
                    str(hostname) if hostname is not None else None,
                    body_is_list,
                    decode_body(message),
                )
                with self._cond:
                    self.messages.append(received)
                    self._cond.notify_all()
        finally:
            await listener.close()
            await self.transport.close()

    # -- reading ------------------------------------------------------------------------------
    def events(self, hostname: str | None = None) -> list[Event]:
        with self._cond:
            found = [e for m in self.messages for e in m.events]
        return [e for e in found if hostname is None or e.get("hostname") == hostname]

    def of_task(self, task_id: str) -> list[Event]:
        return [e for e in self.events() if e.get("uuid") == task_id]

    def wait_for(
        self, what: str, check: Callable[[list[Event]], bool], timeout: float = 15
    ) -> None:
        """Block until ``check(all events so far)`` holds; fail naming ``what`` after
        ``timeout`` seconds, with the event types seen."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for m in self.messages for e in m.events]
                if check(found):
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(e.get("type"), e.get("uuid", e.get("hostname"))) for e in found]
                    raise AssertionError(f"no {what} within {timeout}s; saw {seen}")
                self._cond.wait(remaining)

    def close(self) -> None:
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile: the reader is gone
                loop.call_soon_threadsafe(task.cancel)
        self._thread.join(15)
