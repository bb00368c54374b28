"""Each thread's own subscriber connection, for the Redis result backend's sync waits.

Why: a wait used to borrow a pooled connection, SUBSCRIBE, and UNSUBSCRIBE on its way out, and
that UNSUBSCRIBE round trip sat between the result's arrival and ``get()`` returning (about a
fifth of a ``delay().get()`` round trip on loopback). Here a thread keeps one connection and
leaves its last subscription in place; its next wait sends ``UNSUBSCRIBE old`` and
``SUBSCRIBE new`` in one write, while the task is still on its way to a worker.

Stale messages: the server answers a connection's commands in order, so everything read before
the new subscription's confirmation was published before that subscription took effect, and is
dropped (the GET that follows the confirmation covers it); after it, only messages on the new
channel count. This holds whatever the previous wait left behind: an unread confirmation (it
timed out first), messages on its channel, even the same channel subscribed again.

Threads and fork: a connection belongs to the thread that made it (``threading.local``) and to
the process that opened it (a forked child makes its own and never writes on the parent's
socket). A wait that fails midway (a socket error, an interrupt) leaves the connection in an
unknown state: it is closed and forgotten, and the next wait opens a new one. A thread that ends
takes its connection with it (its locals are freed, and redis-py closes a freed connection);
:meth:`ThreadSubscribers.close` disconnects every thread's at once.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["ThreadSubscribers", "published", "reply_kind"]


def published(reply: Any) -> bytes | None:
    """The record a store announced with its PUBLISH (``None`` for an old-style ``b"1"`` or an
    empty announcement: the waiter then reads the key)."""
    payload = reply[2] if len(reply) > 2 else None
    if payload is None:
        return None
    payload = bytes(payload)
    return payload if payload and payload != b"1" else None


def reply_kind(reply: Any) -> bytes | None:
    """The type of a pub/sub reply (``b"message"``, ``b"subscribe"``...), else ``None``."""
    if isinstance(reply, list | tuple) and reply and isinstance(reply[0], bytes):
        return reply[0].lower()
    return None


def next_reply(conn: Any, deadline: float | None) -> Any:
    """The next pub/sub reply on ``conn``, or ``None`` once ``deadline`` passes."""
    remaining = None if deadline is None else deadline - time.monotonic()
    if remaining is not None and remaining <= 0:
        return None
    if not conn.can_read(timeout=remaining):
        return None
    return conn.read_response()


class _Held:
    """One thread's connection, and the channel it is (or is about to be) subscribed to."""

    __slots__ = ("__weakref__", "channel", "conn", "pid")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.pid = os.getpid()
        self.channel: bytes | None = None


class ThreadSubscribers:
    """Per-thread subscriber connections made by ``make`` (see the module docstring)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._local = threading.local()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._all: weakref.WeakSet[_Held] = weakref.WeakSet()

    def _held(self) -> _Held:
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None and held.pid == os.getpid():
            return held
        if self._pid != os.getpid():  # forked: the parent's connections are not ours to close
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._all = weakref.WeakSet()
        held = _Held(self._make())
        self._local.held = held
        with self._lock:
            self._all.add(held)
        return held

    def _drop(self, held: _Held) -> None:
        if getattr(self._local, "held", None) is held:
            del self._local.held
        with self._lock:
            self._all.discard(held)
        held.conn.disconnect()

    def wait(
        self,
        channel: str,
        deadline: float | None,
        read: Callable[[], bytes | None],
        ready: Callable[[bytes | None], bool],
        data: bytes | None,
    ) -> bytes | None:
        """Subscribe to ``channel``, then ``read()``, then take each message on it until
        ``ready`` or ``deadline``; returns the last record seen (``data`` if none)."""
        name = channel.encode()
        held = self._subscribe(name, deadline)
        if held is None:
            return data
        try:
            conn = held.conn
            data = read()
            while not ready(data):
                reply = next_reply(conn, deadline)
                if reply is None:
                    break
                if reply_kind(reply) == b"message" and bytes(reply[1]) == name:
                    data = published(reply) or read()
            return data
        except BaseException:
            self._drop(held)
            raise

    def _subscribe(self, name: bytes, deadline: float | None) -> _Held | None:
        """This thread's connection, subscribed to ``name`` (confirmed); ``None`` past
        ``deadline``. A connection the server closed meanwhile (a restart, an idle timeout)
        fails here, before anything was read: it is replaced and the subscription sent once
        more, so the first wait after a restart does not fail."""
        for attempt in (1, 2):
            held = self._held()
            conn = held.conn
            try:
                commands: list[tuple[Any, ...]] = []
                if held.channel is not None and held.channel != name:
                    commands.append(("UNSUBSCRIBE", held.channel))
                commands.append(("SUBSCRIBE", name))
                held.channel = name  # from the server's reading of this write on
                conn.send_packed_command(conn.pack_commands(commands), check_health=False)
                while True:  # the confirmation: from here on, every store is announced to us
                    reply = next_reply(conn, deadline)
                    if reply is None:
                        return None
                    if reply_kind(reply) == b"subscribe" and bytes(reply[1]) == name:
                        return held
            except (RedisConnectionError, OSError):
                self._drop(held)
                if attempt == 2:
                    raise
            except BaseException:
                self._drop(held)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def subscribed(self) -> bytes | None:
        """The channel this thread's connection was last subscribed to (for tests)."""
        held: _Held | None = getattr(self._local, "held", None)
        return None if held is None else held.channel

    def close(self) -> None:
        """Disconnect every thread's connection; each thread makes a new one on its next wait."""
        with self._lock:
            every, self._all = list(self._all), weakref.WeakSet()
        for held in every:
            held.channel = None
            if held.pid == os.getpid():
                held.conn.disconnect()
