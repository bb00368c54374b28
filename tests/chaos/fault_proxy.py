"""A fault-injecting TCP proxy on loopback: the network faults of the chaos suite, on demand.

A worker reaches its broker through ``127.0.0.1:<proxy.port>``; the proxy relays bytes to the
real server and, when told, misbehaves the way networks do:

* :meth:`FaultProxy.delay` - every chunk, both ways, waits ``ms`` before it is forwarded
  (a slow or congested link; ``delay(0)`` ends it);
* :meth:`FaultProxy.cut` - every open connection is reset at once (a broker restart seen from
  the client, a NAT that dropped its table); new connections are relayed as before;
* :meth:`FaultProxy.half_open` - every open connection stops being forwarded and is *not*
  closed: no FIN, no RST, the peer never learns. Its bytes stay unread, so the sender's window
  fills. Such a connection stays dead for good (the state that was lost does not come back),
  which is what a client with no keepalive waits on for ever;
* :meth:`FaultProxy.blackhole` - from now on every connection, open or new, is accepted and
  its bytes are read and dropped: a partition that swallows everything. :meth:`FaultProxy.heal`
  ends it for new connections; those that were swallowed stay dead, as with ``half_open``.

The faults are ours, in user space, on loopback: nothing needs root, and no other test's
connection to the shared servers is touched. The proxy runs an asyncio loop in a daemon thread;
every method is called from the test's thread; :meth:`stop` (or leaving the ``with`` block)
closes everything and joins the thread, bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")

_CHUNK = 65536
_START_TIMEOUT = 5.0
_CALL_TIMEOUT = 5.0
_CONNECT_TIMEOUT = 5.0


class LinkState(enum.Enum):
    """What one relayed connection does with its bytes."""

    FORWARD = "forward"
    FROZEN = "frozen"  # half-open: nothing read, nothing forwarded, nothing closed
    SWALLOW = "swallow"  # blackhole: read and dropped


@dataclass(eq=False)
class _Link:
    """One client connection and its upstream twin."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    state: LinkState = LinkState.FORWARD
    pipes: list[asyncio.Task[None]] = field(default_factory=list)
    dead: asyncio.Event = field(default_factory=asyncio.Event)

    def current(self) -> LinkState:
        """The state now (a call, not an attribute: a fault may land during any await)."""
        return self.state

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()
        self.dead.set()


@dataclass(frozen=True)
class ProxyStats:
    """What the proxy has seen and done (for the suite's report)."""

    accepted: int
    cut: int
    frozen: int
    swallowed: int


class FaultProxy:
    """``127.0.0.1:<port>`` relayed to ``upstream``, with faults on demand (see the module)."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._delay = 0.0
        self._blackhole = False
        self._links: set[_Link] = set()
        self._accepted = self._cut = self._frozen = self._swallowed = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    # -- the faults (called from the test's thread) ---------------------------------------------
    def delay(self, ms: float) -> None:
        """Forward every chunk ``ms`` milliseconds late from now on (0: no delay)."""
        self._call(lambda: setattr(self, "_delay", max(0.0, ms) / 1000))

    def cut(self) -> int:
        """Reset every open connection; returns how many were cut."""

        def cut() -> int:
            links = list(self._links)
            for link in links:
                link.abort()
            self._cut += len(links)
            return len(links)

        return self._call(cut)

    def half_open(self) -> int:
        """Freeze every open connection for good (not closed); returns how many."""
        return self._call(lambda: self._mark(LinkState.FROZEN))

    def blackhole(self) -> int:
        """Swallow every byte of every connection, open and new, until :meth:`heal`."""

        def on() -> int:
            self._blackhole = True
            return self._mark(LinkState.SWALLOW)

        return self._call(on)

    def heal(self) -> None:
        """New connections are relayed again, without delay; dead ones stay dead."""

        def off() -> None:
            self._blackhole = False
            self._delay = 0.0

        self._call(off)

    def stats(self) -> ProxyStats:
        return self._call(
            lambda: ProxyStats(self._accepted, self._cut, self._frozen, self._swallowed)
        )

    def open_connections(self) -> int:
        """Connections open now that still forward (not frozen, swallowed or closed)."""
        return self._call(lambda: sum(1 for x in self._links if x.state is LinkState.FORWARD))

    def _mark(self, state: LinkState) -> int:
        marked = 0
        for link in self._links:
            if link.state is LinkState.FORWARD:
                link.state = state
                marked += 1
        if state is LinkState.FROZEN:
            self._frozen += marked
        else:
            self._swallowed += marked
        return marked

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the proxy's loop (its state belongs to that thread) and return."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the fault proxy is not running")

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(_CALL_TIMEOUT)

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._started.wait(_START_TIMEOUT):
            raise RuntimeError("the fault proxy did not start in time")
        if self._error is not None:
            raise RuntimeError(f"the fault proxy did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        """Close the listener and every connection (frozen ones too); join the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(self._shutdown)
        thread.join(_START_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError("the fault proxy did not stop in time")
        self._loop = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the proxy's thread ---------------------------------------------------------------------
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._accept, "127.0.0.1", 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            self._loop = loop
        except BaseException as exc:
            self._error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _shutdown(self) -> None:
        loop = self._loop
        assert loop is not None
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.abort()

        async def finish() -> None:
            pipes = [p for link in self._links for p in link.pipes]
            for pipe in pipes:
                pipe.cancel()
            if pipes:
                await asyncio.wait(pipes, timeout=_START_TIMEOUT / 2)
            loop.stop()

        loop.create_task(finish())

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer, state=LinkState.SWALLOW if self._blackhole else LinkState.FORWARD)
        self._accepted += 1
        self._links.add(link)
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), _CONNECT_TIMEOUT
            )
            link.upstream = up_writer
            link.pipes = [
                asyncio.create_task(self._pipe(link, reader, up_writer)),
                asyncio.create_task(self._pipe(link, up_reader, writer)),
            ]
            # either side closing (or a cut) ends both: the other side is aborted below
            await asyncio.wait(
                [*link.pipes, asyncio.create_task(link.dead.wait())],
                return_when=asyncio.FIRST_COMPLETED,
            )
        except (TimeoutError, OSError):
            pass
        finally:
            for pipe in link.pipes:
                pipe.cancel()
            await asyncio.gather(*link.pipes, return_exceptions=True)
            link.abort()
            self._links.discard(link)

    async def _pipe(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(OSError):
            while True:
                if link.current() is LinkState.FROZEN:
                    await link.dead.wait()  # never read again: the bytes pile up, unanswered
                    return
                data = await reader.read(_CHUNK)
                if not data:
                    return
                state = link.current()  # the fault may have come during the read
                if state is LinkState.SWALLOW:
                    continue
                if state is LinkState.FROZEN:
                    continue  # this chunk is dropped; the check above stops reading
                if self._delay:
                    await asyncio.sleep(self._delay)
                writer.write(data)
                await writer.drain()
