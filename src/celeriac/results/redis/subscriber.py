"""Each thread's own subscriber connection, for the Redis result backend's sync waits.

Why: a wait used to borrow a pooled connection, SUBSCRIBE, and UNSUBSCRIBE on its way out, and
that UNSUBSCRIBE round trip sat between the result's arrival and ``get()`` returning (about a
fifth of a ``delay().get()`` round trip on loopback). Here a thread keeps one connection and
leaves its last subscription in place; its next wait sends ``UNSUBSCRIBE old`` and
``SUBSCRIBE new`` in one write, while the task is still on its way to a worker.

Overlap: a wait on a thread that already holds a connection *writes* its SUBSCRIBE, then runs
the first GET on the command connection without waiting for the confirmation, so the two round
trips overlap (one fewer per ``delay().get()``). A ready record returns at once and leaves the
confirmation unread; otherwise the wait reads the confirmation and only then GETs again (a
store that landed between the first GET and the subscription taking effect is announced to
nobody, so only a GET ordered after the confirmation is sure to see it). A thread's first wait
still GETs before it opens a connection, so a thread that only ever reads ready results never
opens one. The next wait first reads, without blocking, what earlier waits left unread; if a
confirmation is still on its way it GETs first and subscribes only when it must wait, so a loop
of ready gets leaves at most one confirmation unread, never a growing backlog.

Stale messages: the server answers a connection's commands in order, so everything read before
the new subscription's confirmation was published before that subscription took effect, and is
dropped (the GET that follows the confirmation covers it); after it, only messages on the new
channel count. "The confirmation" is the *last* SUBSCRIBE reply the connection owes: each
SUBSCRIBE of one channel gets exactly one reply, so ``_Held.pending`` counts those written and
not yet read, and a wait is confirmed when the count is back to zero. A count, not a channel
name, because a wait may leave its confirmation unread (the record was ready at once, or the
deadline passed first) and the next wait may be for the SAME channel: matching the name would
take the old reply for the new one, and trust a message published between the two SUBSCRIBEs.
So the rule holds whatever earlier waits left behind: unread confirmations, their UNSUBSCRIBE
replies, messages on any channel, the same channel subscribed again.

Restarts: a connection made by an earlier wait may have been closed by the server meanwhile (a
restart, an idle timeout). That shows as a ConnectionError or OSError on the write or, since a
write to a socket whose peer has gone often succeeds, on the confirmation read; either way the
connection is replaced and the subscription sent once more on the new one, so the first wait
after a restart does not fail. A connection made by this wait that fails is a real failure and
raises. Errors of the GETs (the command connection) are the caller's and never cause a retry.

Threads and fork: a connection belongs to the thread that made it (``threading.local``) and to
the process that opened it (a forked child makes its own and never writes on the parent's
socket). A wait that fails midway (a socket error, a failed GET, an interrupt) is not trusted
to have left the connection in a known state: it is closed and forgotten, and the next wait
opens a new one. A thread that ends takes its connection with it (its locals are freed, and
redis-py closes a freed connection); :meth:`ThreadSubscribers.close` disconnects every
thread's at once.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from celeriac.transports.redis import resp

__all__ = ["ThreadSubscribers", "published", "reply_kind"]

#: What a connection the server closed meanwhile raises (redis-py wraps most socket errors).
_STALE = (RedisConnectionError, OSError)


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
    """One thread's connection, the channel it is (or is about to be) subscribed to, and how
    many SUBSCRIBE replies it still owes us."""

    __slots__ = ("__weakref__", "channel", "conn", "pending", "pid")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.pid = os.getpid()
        self.channel: bytes | None = None
        self.pending = 0


class ThreadSubscribers:
    """Per-thread subscriber connections made by ``make`` (see the module docstring)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._local = threading.local()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._all: weakref.WeakSet[_Held] = weakref.WeakSet()

    def _mine(self) -> _Held | None:
        """This thread's connection in this process, if it has one."""
        held: _Held | None = getattr(self._local, "held", None)
        return held if held is not None and held.pid == os.getpid() else None

    def _new(self) -> _Held:
        """A new connection for this thread (not connected yet: redis-py connects on use)."""
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
        first_read: Callable[[], bytes | None],
        read: Callable[[], bytes | None],
        ready: Callable[[bytes | None], bool],
    ) -> bytes | None:
        """Subscribe to ``channel`` while ``first_read()`` runs; unless that is ``ready``,
        read the confirmation, ``read()`` again, then take each message on the channel until
        ``ready`` or ``deadline``. Returns the last record seen."""
        name = channel.encode()
        held = self._mine()
        if held is not None:
            try:
                self._catch_up(held)
            except _STALE:  # closed by the server since the last wait
                self._drop(held)
                held = None
        fresh = held is None
        if held is None or held.pending:
            # The thread's first wait (a ready record must not open a connection), or a ready
            # wait's confirmation still on its way: GET first, so that a loop of ready gets
            # never piles up unread replies (each would leave one more to read through later).
            data = first_read()
            if ready(data):
                return data
            if held is None:
                held = self._subscribe(self._new(), name)
            else:
                held, fresh = self._send(held, name)
        else:
            held, fresh = self._send(held, name)
            try:
                data = first_read()
            except BaseException:
                self._drop(held)
                raise
            if ready(data):
                return data  # the confirmation stays unread: the next wait skips it
        try:
            try:
                confirmed = self._confirm(held, deadline)
            except _STALE:
                if fresh:
                    raise
                self._drop(held)  # closed by the server since the last wait: once more
                held = self._subscribe(self._new(), name)
                confirmed = self._confirm(held, deadline)
            if not confirmed:
                return data
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

    def _send(self, held: _Held, name: bytes) -> tuple[_Held, bool]:
        """Write the subscription on ``held``; if the server closed it since the last wait,
        on a new connection instead. Returns the connection written on, and whether it is new
        (a new one is not retried again)."""
        try:
            return self._subscribe(held, name), False
        except _STALE:
            return self._subscribe(self._new(), name), True

    def _subscribe(self, held: _Held, name: bytes) -> _Held:
        """Write ``UNSUBSCRIBE old`` (if another) and ``SUBSCRIBE name`` in one write, without
        reading anything; ``held`` is dropped if the write fails."""
        conn = held.conn
        commands: list[tuple[Any, ...]] = []
        if held.channel is not None and held.channel != name:
            commands.append(("UNSUBSCRIBE", held.channel))
        commands.append(("SUBSCRIBE", name))
        held.channel = name  # from the server's reading of this write on
        held.pending += 1
        try:
            # through resp.send: a sentinel-managed connection must find the master first
            resp.send(conn, b"".join(conn.pack_commands(commands)))
        except BaseException:
            self._drop(held)
            raise
        return held

    @staticmethod
    def _catch_up(held: _Held) -> None:
        """Read, without waiting, the replies already here that earlier waits left unread (a
        ready wait returns before its confirmation): usually all of them, one round trip on."""
        conn = held.conn
        while held.pending and conn.can_read(timeout=0):
            if reply_kind(conn.read_response()) == b"subscribe":
                held.pending -= 1

    @staticmethod
    def _confirm(held: _Held, deadline: float | None) -> bool:
        """Read up to the last SUBSCRIBE reply owed (the one for the channel just written),
        dropping everything before it; ``False`` once ``deadline`` passes."""
        conn = held.conn
        while held.pending:
            reply = next_reply(conn, deadline)
            if reply is None:
                return False
            if reply_kind(reply) == b"subscribe":
                held.pending -= 1
        return True

    def subscribed(self) -> bytes | None:
        """The channel this thread's connection was last subscribed to (for tests)."""
        held: _Held | None = getattr(self._local, "held", None)
        return None if held is None else held.channel

    def close(self) -> None:
        """Disconnect every thread's connection; each thread makes a new one on its next wait."""
        with self._lock:
            every, self._all = list(self._all), weakref.WeakSet()
        for held in every:
            held.channel, held.pending = None, 0
            if held.pid == os.getpid():
                held.conn.disconnect()
