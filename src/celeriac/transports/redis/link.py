"""A pipelined Redis connection for a consumer's hot commands: the claim and settle scripts.

Why: through redis-py's asyncio client one script call cost a busy worker 230 us of CPU for a
claim of four messages and 180 us for a settle (a 2-core box, measured in a loop), most of it
the client's machinery around one write and one read: a pool checkout and release with their
observability hooks, an encoder call per argument, a ``wait_for`` per send, the stream reader's
buffering, and about six event-loop turns per call. Here a call is one ``transport.write`` and
one future, resolved in ``data_received`` by hiredis' reader: 65 and 46 us for the same two
calls. At four messages a claim and ten acks a settle that was about a quarter of a prefork
worker's main-process CPU per drained task.

The connection is opened by redis-py (:meth:`Link.open`), so the URL's every option holds:
TLS, a unix socket, AUTH, ``SELECT``, the RESP version, keep-alive, and Sentinel, whose
connection asks the sentinels for the master as it connects. Once its handshake is done the
socket's asyncio transport is taken over by this protocol and redis-py's connection object is
let go (it is left unconnected, so it neither warns nor closes the socket later).

Calls are pipelined: each writes its commands at once and takes the next replies in order, so
a settle sent while a claim is in flight does not wait for it. A lost connection fails every
call waiting on it with ``redis.ConnectionError``; so does a reply that does not come within
``timeout`` (a half-open link must not hold a consumer for ever), after which the link is
closed. An error reply (``NOSCRIPT``, a script's refusal) is handed back as a
``redis.ResponseError`` in the reply list, not raised: the caller decides.
"""

from __future__ import annotations

import asyncio
import collections
import math
from typing import Any

import hiredis
import redis
from redis.exceptions import ResponseError

__all__ = ["READ_ONLY", "Link", "raised", "read_only"]

#: Why a connection to a master that a failover made a replica is dropped.
READ_ONLY = "the master became a replica (READONLY)"


class _Call:
    __slots__ = ("deadline", "future", "replies", "wanted")

    def __init__(self, future: asyncio.Future[list[Any]], wanted: int, deadline: float) -> None:
        self.future = future
        self.replies: list[Any] = []
        self.wanted = wanted
        self.deadline = deadline


class Link(asyncio.Protocol):
    """One pipelined connection; make it with :meth:`open` (see the module docstring)."""

    def __init__(self, transport: asyncio.Transport, timeout: float | None) -> None:
        self._transport = transport
        self._timeout = timeout
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._calls: collections.deque[_Call] = collections.deque()
        self._watch: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._streams: tuple[Any, Any] | None = None
        self.closed = False
        #: The connection's ``CLIENT ID`` when opened with ``identify`` (for ``CLIENT UNBLOCK``).
        self.client_id: int | None = None

    @classmethod
    async def open(cls, pool: Any, timeout: float | None, identify: bool = False) -> Link:
        """A link on a new connection made by ``pool`` (a ``redis.asyncio`` connection pool:
        its connection class, with its options, connects and does the handshake); with
        ``identify``, its ``CLIENT ID`` is asked for first."""
        conn = pool.make_connection()
        await conn.connect()
        client_id = None
        if identify:
            try:
                await conn.send_command("CLIENT", "ID")
                client_id = int(await conn.read_response())
            except BaseException:
                await conn.disconnect()
                raise
        writer = conn._writer
        transport = writer.transport
        link = cls(transport, timeout)
        transport.set_protocol(link)
        # redis-py's connection is let go: unconnected, it neither warns nor closes the socket;
        # its stream objects stay with the link, since a StreamWriter collected while its
        # transport is open closes it
        link._streams = (conn._reader, writer)
        link.client_id = client_id
        conn._reader = conn._writer = None
        return link

    def call(
        self, packed: bytes, replies: int = 1, timeout: float | None = None
    ) -> asyncio.Future[list[Any]]:
        """Write ``packed`` (``replies`` commands) now; the future receives their replies.
        ``timeout``: this call's, instead of the link's (a blocking command's wait plus a
        grace); only the oldest call's is watched, since no reply can overtake it."""
        future: asyncio.Future[list[Any]] = self._loop.create_future()
        if self.closed:
            future.set_exception(redis.ConnectionError("the link to Redis is closed"))
            return future
        limit = self._timeout if timeout is None else timeout
        deadline = self._loop.time() + limit if limit is not None else math.inf
        self._calls.append(_Call(future, replies, deadline))
        self._transport.write(packed)
        if self._watch is None and deadline != math.inf:
            self._watch = self._loop.call_at(deadline, self._check)
        return future

    def close(self) -> None:
        """Close the connection; calls still waiting fail."""
        if not self.closed:
            self.closed = True
            self._transport.close()
            self._fail(redis.ConnectionError("the link to Redis was closed"))

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        calls = self._calls
        while calls:
            reply = reader.gets()
            if reply is False:
                return
            call = calls[0]
            call.replies.append(reply)
            if len(call.replies) == call.wanted:
                calls.popleft()
                if not call.future.done():  # its caller may have been cancelled
                    call.future.set_result(call.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        reason = f": {exc}" if exc is not None else ""
        self._fail(redis.ConnectionError(f"Connection to Redis lost{reason}"))

    # -- internals --------------------------------------------------------------------------------
    def _fail(self, error: Exception) -> None:
        calls, self._calls = self._calls, collections.deque()
        for call in calls:
            if not call.future.done():
                call.future.set_exception(error)

    def _check(self) -> None:
        """The oldest call waits too long: the link is taken for dead and closed."""
        self._watch = None
        if not self._calls or self.closed:
            return
        due = self._calls[0].deadline
        if due == math.inf:
            return
        if self._loop.time() >= due:
            self.closed = True
            self._transport.abort()
            self._fail(
                redis.TimeoutError("no reply from Redis in time: the link is taken for dead")
            )
            return
        self._watch = self._loop.call_at(due, self._check)


def read_only(reply: Any) -> bool:
    """A master's refusal since a failover made it a replica (hiredis keeps the error's
    prefix; redis-py's ``ReadOnlyError`` drops it)."""
    return isinstance(reply, redis.ReadOnlyError) or (
        isinstance(reply, ResponseError) and str(reply).startswith("READONLY")
    )


def raised(reply: Any) -> Any:
    """A reply, or its error reply raised."""
    if isinstance(reply, Exception):
        raise reply
    return reply
