"""A blocking consumer on a plain socket, for a process that fetches its own messages one at a
time and has nothing else to do while it waits: a prefork child that claims for itself.

Why: a prefork child handed each task by the worker's main process costs the worker two pipe
crossings, two wake-ups and the main process's event-loop machinery per task (355 us of CPU per
drained no-op task for the whole ``-c 2`` worker, 57 of them the task's own ``INCR``, on a 2-core
box). Two processes each claiming one message at a time through this class, acks carried by the
next claim, spent 180-193 us per task in the same sitting (``bench/floor.py``, workload (e)).
The socket blocks rather than running an event loop: on that box an asyncio round trip cost
about 70 us of CPU where a blocking one cost 13, and a process that runs one task at a time has
nothing to schedule while it waits.

One call, one write: the acks of the tasks just run (``acks``), then, when the last claim on
these queues came back short (they were empty then), a ``BLPOP`` on their notify lists, then
the claim script. Redis runs the acks at once and the claim as soon as the ``BLPOP`` returns
(a publish, or its timeout), so an idle process is woken with its work, and a busy one settles
and claims in one round trip. A claim that leaves messages ready pushes the notify list again,
which wakes the next idle process.

Nothing claimed is lost: a claim's messages are leased, and come back to their queue when the
lease ends if this process dies holding them. A wait can be ended from another connection with
``CLIENT UNBLOCK <client_id> ERROR`` (:attr:`Fetcher.client_id`): the claim behind it runs at
once, and the fetch returns what it took (maybe nothing) with :attr:`Fetcher.interrupted` set,
so that its caller looks at why it was woken (a worker telling its child to stop).

A lost connection is opened again and the write sent again, up to the transport's retries (an
ack sent twice is only warned of as stale); a script Redis forgot (``NOSCRIPT``: it restarted)
is run through redis-py, which loads it; a master that a failover made a replica (``READONLY``)
closes the connection and counts as lost, as redis-py's Sentinel connection treats it.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import hiredis
import redis
from redis.exceptions import ResponseError

from celeriac.transports.base import Delivery
from celeriac.transports.redis import scripts as lua
from celeriac.transports.redis.link import READ_ONLY, raised, read_only
from celeriac.transports.redis.resp import pack_command

if TYPE_CHECKING:
    from celeriac.transports.redis.transport import RedisTransport

__all__ = ["Fetcher"]

logger = logging.getLogger(__name__)

#: How long past a ``BLPOP``'s own timeout a silent server is taken for a dead connection.
GRACE = 5.0


class Fetcher:
    """One process's blocking consumer (see the module docstring); make it with
    :meth:`RedisTransport.fetcher() <celeriac.transports.redis.transport.RedisTransport.fetcher>`.
    Not thread-safe and not to be shared across a fork: it reopens its connection in a child."""

    def __init__(
        self,
        transport: RedisTransport,
        connect: Callable[[], Any],
        scripts: dict[str, Any],
        *,
        retries: int,
        timeout: float | None,
    ) -> None:
        self._transport = transport
        self._connect = connect  # a new, unconnected redis-py connection
        self._scripts = scripts  # name -> redis-py Script (sha, and a way to load it)
        self._conn: Any = None
        self._sock: socket.socket | None = None
        self._sock_timeout: float | None = -1.0  # the read timeout set on it (-1: none yet)
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._pid = 0
        self._rotation = 0
        #: queues -> monotonic time until which a claim is known to find nothing
        self._emptied: dict[tuple[str, ...], float] = {}
        self._retries = retries
        self._timeout = float(timeout) if timeout else None
        #: The open connection's ``CLIENT ID`` (for ``CLIENT UNBLOCK`` of a wait), else None.
        self.client_id: int | None = None
        #: The last fetch's wait was ended by ``CLIENT UNBLOCK <client_id> ERROR``.
        self.interrupted = False
        #: The last claim left ready messages in its queues (a caller may claim more at once).
        self.ready_left = False
        self._unread: list[list[Delivery]] = []  # acks written ahead, replies not read yet
        self._resend: list[Delivery] = []  # acks to send again (their connection broke)

    # -- the calls ----------------------------------------------------------------------------
    def fetch(
        self,
        queues: Sequence[str],
        max_count: int,
        timeout: float,
        acks: Sequence[Delivery] = (),
    ) -> list[Delivery]:
        """Ack ``acks``, then lease up to ``max_count`` messages of ``queues``, waiting up to
        ``timeout`` seconds for the first (0: no wait); raises
        :class:`~celeriac.errors.TransportError` when Redis cannot be reached. The acks are sent
        even when nothing is claimed."""
        wanted = list(dict.fromkeys(queues))
        key = tuple(wanted)
        now = time.monotonic()
        deadline = now + max(timeout, 0.0)
        wait: float | None = None
        empty_until = self._emptied.pop(key, None)
        if empty_until is not None and empty_until > now and timeout > 0:
            wait = _blpop_seconds(min(deadline, empty_until) - now)
        riders = list(acks)
        self.interrupted = False
        while True:
            deliveries, empty, next_due = self._claim(wanted, max_count, wait, riders)
            riders = []
            self.ready_left = bool(deliveries) and not empty
            if empty:
                due = time.monotonic() + next_due if next_due is not None else math.inf
                self._emptied[key] = due
            if deliveries or max_count <= 0 or not wanted or self.interrupted:
                return deliveries
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            wait = _blpop_seconds(remaining if next_due is None else min(remaining, next_due))

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._settle("ack", "", deliveries)

    def requeue(self, deliveries: Sequence[Delivery], delay: float = 0.0) -> None:
        self._settle("requeue", max(float(delay), 0.0), deliveries)

    def give_back(self, deliveries: Sequence[Delivery]) -> None:
        """Put messages claimed but never run back in their places in their queues (ahead of
        those published after them, unlike :meth:`requeue`)."""
        self._settle("return", "", deliveries)

    def reject(self, deliveries: Sequence[Delivery], reason: str) -> None:
        self._settle("reject", reason, deliveries)

    def extend(self, deliveries: Sequence[Delivery], seconds: float | None = None) -> None:
        lease = self._transport.lease_seconds if seconds is None else seconds
        self._settle("extend", lease, deliveries)

    def _settle(self, op: str, argument: Any, deliveries: Sequence[Delivery]) -> None:
        """One settle script call for the batch; deliveries no longer held are only warned of."""
        if not deliveries:
            return
        args = self._transport.settle_args(op, argument, deliveries)
        try:
            [stale] = self._run([("settle", args)], None)
        except (redis.RedisError, OSError) as exc:
            raise self._transport.failure(op, exc) from exc
        self._transport.warn_stale(op, raised(stale), deliveries)

    def close(self) -> None:
        """Disconnect; the next call connects again (and sends again the acks written ahead
        whose replies it had not read)."""
        for batch in self._unread:
            self._resend.extend(batch)
        self._unread = []
        conn, self._conn, self._sock, self.client_id = self._conn, None, None, None
        self._reader = hiredis.Reader(replyError=ResponseError)
        if conn is not None and self._pid == os.getpid():
            conn.disconnect()

    # -- one write, its replies ---------------------------------------------------------------
    def _claim(
        self,
        queues: list[str],
        max_count: int,
        wait: float | None,
        riders: list[Delivery],
    ) -> tuple[list[Delivery], bool, float | None]:
        """One write (see the module docstring): the deliveries, whether the queues are left
        with no ready message, and the seconds until the next falls due, if known."""
        transport = self._transport
        calls: list[tuple[str, Sequence[Any]]] = []
        if riders:
            calls.append(("settle", transport.settle_args("ack", "", riders)))
        if max_count > 0 and queues:
            self._rotation += 1
            args = [
                transport.prefix,
                transport.lease_seconds,
                transport.max_deliveries,
                max_count,
                self._rotation,
                *queues,
            ]
            calls.append(("claim", args))
        if not calls:
            return [], False, None
        blpop = None
        if wait is not None and queues and max_count > 0:
            blpop = ([transport.queue_key(queue, "notify") for queue in queues], wait)
        try:
            replies = self._run(calls, blpop)
        except (redis.RedisError, OSError) as exc:
            raise transport.failure("waiting for messages" if blpop else "get", exc) from exc
        if riders:
            transport.warn_stale("ack", raised(replies[0]), riders)
        if max_count <= 0 or not queues:
            return [], False, None
        reply = raised(replies[-1])
        deliveries, dead = lua.claimed(reply, queues)
        transport._report_dead_letters(dead)  # the worker's watcher, if any
        return (deliveries, *lua.drained(reply))

    def _run(
        self,
        calls: Sequence[tuple[str, Sequence[Any]]],
        blpop: tuple[list[str], float] | None,
    ) -> list[Any]:
        """Each ``(script, args)`` run with ``EVALSHA`` in one write, the ``BLPOP`` of
        ``blpop = (keys, seconds)`` before the last when given; the scripts' replies in order,
        an error reply in its place. The replies of acks written ahead (:meth:`ack_ahead`) are
        read first. Reconnects and writes again on a lost connection (with the acks written
        ahead whose replies were lost), up to the transport's retries; runs a forgotten script
        through redis-py (which loads it)."""
        timeout = self._timeout if blpop is None else blpop[1] + GRACE
        attempt = 0
        while True:
            resend, self._resend = self._resend, []
            front = [("settle", self._transport.settle_args("ack", "", resend))] if resend else []
            sent = [*front, *calls]
            commands: list[tuple[Any, ...]] = []
            for index, (name, args) in enumerate(sent):
                if blpop is not None and index == len(sent) - 1:
                    commands.append(("BLPOP", *blpop[0], blpop[1]))
                commands.append(("EVALSHA", self._scripts[name].sha, 0, *args))
            packed = b"".join([pack_command(command) for command in commands])
            ahead = self._unread
            try:
                replies = self._call(packed, len(ahead) + len(commands), timeout)
                if any(read_only(reply) for reply in replies):
                    raise redis.ConnectionError(READ_ONLY)
                break
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                self._resend = resend + self._resend
                self.close()  # the acks written ahead are sent again too
                attempt += 1
                if attempt > self._retries:
                    raise
        self._unread = []
        for batch, reply in zip(ahead, replies, strict=False):
            self._acked(batch, reply)
        del replies[: len(ahead)]
        if blpop is not None:  # the BLPOP's: only a wake-up, or CLIENT UNBLOCK's error
            woken = replies.pop(-2)
            self.interrupted = isinstance(woken, ResponseError) and str(woken).startswith(
                "UNBLOCKED"
            )
        if front:
            self._acked(resend, replies.pop(0))
        for index, reply in enumerate(replies):
            if isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT"):
                replies[index] = self._loaded(*calls[index])
        return replies

    def _loaded(self, name: str, args: Sequence[Any]) -> Any:
        """Run a script Redis forgot through redis-py (which loads it); its reply or error."""
        try:
            return self._scripts[name](args=list(args))
        except ResponseError as exc:
            if read_only(exc):  # a replica forgets scripts when it syncs
                self.close()
                raise redis.ConnectionError(READ_ONLY) from exc
            return exc

    def _acked(self, deliveries: list[Delivery], reply: Any) -> None:
        """The reply of acks sent ahead of the call that read it."""
        if isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT"):
            reply = self._loaded("settle", self._transport.settle_args("ack", "", deliveries))
        if isinstance(reply, Exception):
            logger.warning("acking %d messages failed: %s", len(deliveries), reply)
            return
        self._transport.warn_stale("ack", reply, deliveries)

    def ack_ahead(self, deliveries: Sequence[Delivery]) -> None:
        """Ack ``deliveries`` now, without waiting for the reply (the next call reads it): a
        task acked early is acked as it starts, for one write. Sent again with the next call if
        the connection fails."""
        if not deliveries:
            return
        args = self._transport.settle_args("ack", "", deliveries)
        packed = pack_command(("EVALSHA", self._scripts["settle"].sha, 0, *args))
        try:
            self._socket().sendall(packed)
        except (redis.RedisError, OSError):
            self._resend.extend(deliveries)
            self.close()
            return
        self._unread.append(list(deliveries))

    def _call(self, packed: bytes, wanted: int, timeout: float | None) -> list[Any]:
        """Write ``packed`` and read ``wanted`` replies, each read waiting no longer than
        ``timeout``. The socket stays in blocking mode and the kernel keeps the timeout
        (``SO_RCVTIMEO``): a Python-level timeout costs a ``poll`` before every read and two
        ``fcntl`` calls per change."""
        sock = self._socket()
        if timeout != self._sock_timeout:
            seconds = 0.0 if timeout is None else max(timeout, 0.001)
            whole = int(seconds)
            sock.setsockopt(
                socket.SOL_SOCKET,
                socket.SO_RCVTIMEO,
                struct.pack("ll", whole, int((seconds - whole) * 1e6)),
            )
            self._sock_timeout = timeout
        sock.sendall(packed)
        replies: list[Any] = []
        reader = self._reader
        while len(replies) < wanted:
            reply = reader.gets()
            if reply is False:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:  # SO_RCVTIMEO ran out
                    raise redis.TimeoutError(f"no reply from Redis within {timeout} s") from None
                if not data:
                    raise redis.ConnectionError("Redis closed the connection")
                reader.feed(data)
                continue
            replies.append(reply)
        return replies

    def _socket(self) -> socket.socket:
        """The open socket, connected (its ``CLIENT ID`` asked, the scripts loaded) on first
        use, again after a loss and in a forked child. redis-py connects it, so every option
        of the URL holds (TLS, a unix socket, AUTH, ``SELECT``, Sentinel's master lookup)."""
        if self._sock is not None and self._pid == os.getpid():
            return self._sock
        self._conn = None  # a parent's connection is the parent's: never closed here
        conn = self._connect()
        conn.connect()
        conn.send_command("CLIENT", "ID")
        self.client_id = int(conn.read_response())
        for script in self._scripts.values():  # so that an ack written ahead runs at once
            conn.send_command("SCRIPT", "LOAD", script.script)
            conn.read_response()
        sock: socket.socket = conn._sock
        sock.settimeout(None)  # see _call: the kernel keeps the read timeout
        self._conn, self._sock, self._pid, self._sock_timeout = conn, sock, os.getpid(), -1.0
        self._reader = hiredis.Reader(replyError=ResponseError)
        return sock


def _blpop_seconds(seconds: float) -> float:
    """``BLPOP`` counts in whole milliseconds and reads 0 as "forever": never less than 1 ms."""
    return max(1, math.ceil(seconds * 1000)) / 1000
