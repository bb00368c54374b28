"""What every broker's transient fan-out shares: the listener's bounded inbox, who accepts what,
and the envelope on the wire.

Events and remote-control requests are a stream, not a queue: a message goes to whoever listens
now, and a listener that falls behind loses the oldest rather than making the broker (or its own
process) hold an unbounded backlog. So each broker's :class:`~celeriac.transports.base.Listener`
is an :class:`InboxListener`: the broker side feeds raw items (bytes, or a client library's
delivery) into an :class:`Inbox` of ``buffer`` items from whichever thread receives them, the
inbox drops the oldest past its size and counts them, and :meth:`InboxListener.get` decodes only
what the reader takes, so a dropped message costs no decoding.

**Who accepts what** (:func:`accepts`): a fanout listener takes everything published to its
exchange; a topic one what matches one of its patterns (AMQP's ``*`` and ``#``, by
:func:`celeriac.routing.matching.topic_matches`); a direct one the keys it names; a headers one
everything (transient messages are not routed on headers).

**The envelope** (:func:`envelope`) is kombu's JSON envelope as kombu's virtual transports send it:
:meth:`~celeriac.protocol.message.Message.to_wire` plus ``delivery_info`` (exchange, routing key)
and a ``delivery_tag``, which kombu's receivers read from every message (a Redis PUBLISH without
one fails in Celery's event receiver and in a Celery worker's mailbox). :func:`from_envelope` reads
one back without insisting on a task message: events and control requests have no ``task`` or
``id`` header. Every received :class:`~celeriac.protocol.message.Message` carries
``properties["delivery_info"]`` with the exchange and routing key it came by, on every broker.

:class:`LocalHub` is the in-process fan-out of the memory broker, kept here so that the broker
module stays about its queues.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import logging
import os
import secrets
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

import orjson

from celeriac.errors import DecodeError
from celeriac.protocol.message import Message
from celeriac.routing import Exchange
from celeriac.routing.matching import topic_matches
from celeriac.transports.base import Listener

logger = logging.getLogger("celeriac.transports")

T = TypeVar("T")

#: The default ``buffer`` of :meth:`~celeriac.transports.base.Transport.listen`.
DEFAULT_BUFFER = 10_000


# -- who accepts what ---------------------------------------------------------------------------
def accepts(exchange_type: str, patterns: Sequence[str], routing_key: str) -> bool:
    """Whether a listener of an exchange of ``exchange_type`` bound with ``patterns`` takes a
    message published with ``routing_key`` (see the module docstring)."""
    if exchange_type == "topic":
        return any(topic_matches(pattern, routing_key) for pattern in patterns)
    if exchange_type == "direct":
        return routing_key in patterns
    return True


def check_listen(exchange: Exchange, patterns: Sequence[str], buffer: int) -> tuple[str, ...]:
    """The patterns as a tuple, or ValueError naming what is wrong with the arguments."""
    if isinstance(patterns, str):
        raise ValueError(f"patterns must be a sequence of strings, not the string {patterns!r}")
    found = tuple(patterns)
    if not found and exchange.type in ("topic", "direct"):
        raise ValueError(
            f"a listener of the {exchange.type} exchange {exchange.name!r} needs a pattern"
        )
    if not isinstance(buffer, int) or buffer < 1:
        raise ValueError(f"buffer must be a positive number of messages, not {buffer!r}")
    return found


# -- the envelope -------------------------------------------------------------------------------
class _Tags:
    """Delivery tags shaped as kombu's (a UUID's text), unique without a ``uuid4()`` each: a
    random prefix per process (drawn again in a forked child) and a counter. A tag only has to
    be unique; the envelope of every event pays for it, so it is made cheap."""

    def __init__(self) -> None:
        self._draw()
        os.register_at_fork(after_in_child=self._draw)

    def _draw(self) -> None:
        self._prefix = str(uuid.uuid4())[:24]
        self._counter = itertools.count(secrets.randbelow(1 << 40))

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFF:012x}"


_tags = _Tags()


def envelope(message: Message, exchange: str, routing_key: str) -> bytes:
    """``message`` in kombu's JSON envelope as published to ``exchange`` with ``routing_key``
    (raises :class:`~celeriac.errors.DecodeError` if its headers are not JSON)."""
    properties = {
        **message.properties,
        "body_encoding": "base64",
        "delivery_info": {"exchange": exchange, "routing_key": routing_key},
        "delivery_tag": _tags.next(),
    }
    data = {
        "body": base64.b64encode(message.body).decode("ascii"),
        "content-encoding": message.content_encoding,
        "content-type": message.content_type,
        "headers": dict(message.headers),
        "properties": properties,
    }
    try:
        return orjson.dumps(data)
    except TypeError as exc:
        raise DecodeError(f"message headers are not JSON-serializable: {exc}") from exc


def from_envelope(data: bytes | str) -> Message:
    """The message in a kombu JSON envelope, task message or not; DecodeError naming the defect.

    ``delivery_tag`` and ``body_encoding`` are the envelope's, not the message's: they are left
    out of the properties (``delivery_info`` stays, to say how the message came)."""
    try:
        found = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"envelope is not valid JSON: {exc}") from exc
    if not isinstance(found, dict):
        raise DecodeError("envelope is not a JSON object")
    headers = found.get("headers")
    properties = found.get("properties")
    headers = {} if headers is None else headers
    properties = {} if properties is None else properties
    raw_body = found.get("body")
    if not isinstance(headers, dict) or not isinstance(properties, dict):
        raise DecodeError("envelope headers or properties are not objects")
    encoding = properties.pop("body_encoding", None)
    properties.pop("delivery_tag", None)
    if raw_body is None:
        body = b""
    elif not isinstance(raw_body, str):
        raise DecodeError("envelope body is not a string")
    elif encoding == "base64":
        try:
            body = base64.b64decode(raw_body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DecodeError(f"envelope body is not valid base64: {exc}") from exc
    else:
        body = raw_body.encode("utf-8")
    return Message(
        headers=headers,
        body=body,
        content_type=str(found.get("content-type") or "application/json"),
        content_encoding=str(found.get("content-encoding") or "utf-8"),
        properties=properties,
    )


# -- the inbox ----------------------------------------------------------------------------------
class Inbox(Generic[T]):
    """A bounded FIFO fed from any thread and read on one event loop: past ``size`` items the
    oldest is dropped and counted in :attr:`dropped`. Closing it wakes every reader."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.dropped = 0
        self.closed = False
        self._items: deque[T] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def __len__(self) -> int:
        return len(self._items)

    def put_many(self, items: Iterable[T]) -> None:
        """Append ``items`` (dropping the oldest past the size) and wake the readers."""
        batch = items if isinstance(items, list | tuple) else list(items)
        with self._lock:
            if self.closed:
                return
            excess = len(self._items) + len(batch) - self.size
            if excess > 0:
                self.dropped += excess
            self._items.extend(batch)  # a deque with maxlen drops the oldest itself
            waiting, self._waiting = self._waiting, []
        _wake(waiting)

    def put(self, item: T) -> None:
        self.put_many((item,))

    def take(self) -> T | None:
        """The oldest item, or None when empty."""
        with self._lock:
            return self._items.popleft() if self._items else None

    async def get(self, timeout: float | None) -> T | None:
        """The oldest item, waiting up to ``timeout`` seconds (None: until one comes or the
        inbox closes); None when none came."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + max(timeout, 0.0)
        while True:
            with self._lock:
                if self._items:
                    return self._items.popleft()
                if self.closed:
                    return None
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return None
                future: asyncio.Future[None] = loop.create_future()
                self._waiting.append((loop, future))
            try:
                await asyncio.wait_for(future, remaining)
            except TimeoutError:
                return self.take()
            finally:
                with self._lock, contextlib.suppress(ValueError):
                    self._waiting.remove((loop, future))

    def close(self) -> None:
        """Forget what is buffered and wake every reader (they return None from now on)."""
        with self._lock:
            self.closed = True
            self._items.clear()
            waiting, self._waiting = self._waiting, []
        _wake(waiting)


def _wake(waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
    for loop, future in waiting:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody left to wake
            loop.call_soon_threadsafe(_settle, future)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# -- listeners ----------------------------------------------------------------------------------
class InboxListener(Listener, Generic[T]):
    """A listener whose broker side feeds an :class:`Inbox` of raw items; :meth:`decode` turns
    one into a message (envelope bytes by default). After :meth:`close`, :meth:`get` returns
    None at once."""

    def __init__(self, exchange: Exchange, patterns: Sequence[str], buffer: int) -> None:
        self.exchange = exchange
        self.patterns = check_listen(exchange, patterns, buffer)
        self.buffer = buffer
        self.inbox: Inbox[T] = Inbox(buffer)

    @property
    def dropped(self) -> int:
        """How many messages were dropped, the oldest first, because the reader fell behind."""
        return self.inbox.dropped

    @dropped.setter
    def dropped(self, value: int) -> None:
        self.inbox.dropped = value

    def accepts(self, routing_key: str) -> bool:
        return accepts(self.exchange.type, self.patterns, routing_key)

    def decode(self, item: T) -> Message:
        """The message in one received item (DecodeError if it holds none)."""
        if not isinstance(item, bytes | str):
            raise DecodeError(f"cannot decode a {type(item).__name__}")
        return from_envelope(item)

    async def get(self, timeout: float | None = None) -> Message | None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
            item = await self.inbox.get(remaining)
            if item is None:
                return None
            try:
                return self.decode(item)
            except DecodeError as exc:
                logger.warning(
                    "dropped a message on %r that is not one: %s", self.exchange.name, exc
                )

    def __repr__(self) -> str:
        state = "closed" if self.inbox.closed else f"{len(self.inbox)} waiting"
        return f"<{type(self).__name__} {self.exchange.name!r} {list(self.patterns)} {state}>"


class LocalListener(InboxListener[bytes]):
    """A listener of a :class:`LocalHub` (the memory broker's)."""

    def __init__(
        self, hub: LocalHub, exchange: Exchange, patterns: Sequence[str], buffer: int
    ) -> None:
        super().__init__(exchange, patterns, buffer)
        self._hub = hub

    async def open(self) -> None:
        self._hub.register(self)

    async def close(self) -> None:
        self._hub.unregister(self)
        self.inbox.close()


class LocalHub:
    """In-process fan-out for one broker: its open listeners by exchange, safe from any thread.

    A publish builds the envelopes only when some listener takes the routing key, and hands the
    same bytes to each (every listener decodes its own copy)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[str, list[LocalListener]] = {}

    def register(self, listener: LocalListener) -> None:
        with self._lock:
            found = self._listeners.setdefault(listener.exchange.name, [])
            if listener not in found:
                found.append(listener)

    def unregister(self, listener: LocalListener) -> None:
        with self._lock:
            found = self._listeners.get(listener.exchange.name, [])
            with contextlib.suppress(ValueError):
                found.remove(listener)
            if not found:
                self._listeners.pop(listener.exchange.name, None)

    def listening(self, exchange: str) -> int:
        """How many listeners are open on ``exchange``."""
        with self._lock:
            return len(self._listeners.get(exchange, ()))

    def publish(self, exchange: str, routing_key: str, messages: Sequence[Message]) -> int:
        """Hand ``messages`` to the listeners that take ``routing_key``; how many took them."""
        with self._lock:
            takers = [x for x in self._listeners.get(exchange, ()) if x.accepts(routing_key)]
        if not takers or not messages:
            return len(takers)
        wires = [envelope(message, exchange, routing_key) for message in messages]
        for listener in takers:
            listener.inbox.put_many(wires)
        return len(takers)


def backoff(previous: float, low: float, high: float) -> float:
    """The next pause of a doubling back-off between ``low`` and ``high``."""
    return min(max(previous * 2, low), high)


__all__ = [
    "DEFAULT_BUFFER",
    "Inbox",
    "InboxListener",
    "LocalHub",
    "LocalListener",
    "accepts",
    "backoff",
    "check_listen",
    "envelope",
    "from_envelope",
]
