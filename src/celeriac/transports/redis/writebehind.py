"""Sync publishes on Redis written ahead of their replies: a ``.delay()`` returns once its
``EVALSHA`` is written on its thread's own connection, and the reply is read later, with at
most ``confirm_window`` messages awaiting theirs at a time.

Why: a sync send that waits for its reply spends a round trip, plus the publish script's run,
doing nothing; a ``.delay()`` loop measured on a 2-core box sent about 4,900 a second waiting
for each reply and about 20,000 with the replies read behind (``bench/``). It is what RabbitMQ's
confirm window does (:mod:`celeriac.app.pipeline`) without its thread hop: the writes and the
reads happen in the sending thread, in order, on one connection, so an isolated send (a web
request's one ``.delay()``) costs no more than before and nothing else runs in between.

The guarantee at the end is the one a waited-for send gives: every message is stored, or
published again, or its failure raised to the process. Replies that have arrived are read by
a send once :data:`READ_AT` await theirs (no wait), or at once when the server closed the link
(one ``poll``); the oldest is waited for while the window is full, and all
of them by :meth:`WriteBehind.flush`, which ``Producer.flush()``, ``app.close()``, the
interpreter's exit and a worker (before it stores a task's result, as for RabbitMQ) call. A
publish whose reply is an error is kept and published again (the blocking way) at the
thread's next send or flush, which raises if it still fails; the send that raises has taken
nothing, so the producer's retry policy may call it again. A connection lost with sends in
the window sends them again once on a new one (a message Redis had stored before the loss then
runs twice: at-least-once, as a worker lost mid-task); if that fails too they are kept, as
above. One refused because the topology changed since it was routed is routed again (the
blocking way) once the window before it is read. A process killed with messages in the window
loses them, as it would lose a send in progress.

Nothing waits on a thread that went quiet: a web request's one ``.delay()`` followed by
``.get()``, or a thread that sends no more. A reaper thread (one per process, awake only while
some window holds unread replies) reads them every :data:`REAP_INTERVAL` when their thread is
not sending, so a refusal that needs the client (routed on an old topology, a script Redis
lost) is acted on within that time, and a failure is logged then. Each new connection gets the
script first (``SCRIPT LOAD``, pipelined ahead of the first publish), so a fresh or restarted
Redis answers the publishes themselves.

``confirm_window: 0`` in ``broker_transport_options`` turns this off: each send waits.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import select
import threading
import time
import weakref
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from celeriac.errors import TransportError
from celeriac.transports.base import Outgoing
from celeriac.transports.redis import resp
from celeriac.transports.redis.resp import pack_command

logger = logging.getLogger("celeriac.transports.redis")

#: The publish algorithm suspended at a step (``RedisTransport._publish_steps``).
Steps = Generator[Any, Any, list[int]]
#: Drives a publish generator from a step to its end, the blocking way.
Finish = Callable[[Steps, Any], object]
#: Publishes items the blocking way (the resend of a failed send).
Republish = Callable[[Sequence[Outgoing], Sequence[bytes]], object]

_CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)
#: Seconds between the reaper's reads of quiet threads' windows.
REAP_INTERVAL = 0.05
#: A send reads the replies that have arrived only once this many messages await theirs (or
#: the server closed the link: a send to a Redis that went away still fails in its call).
#: Reading after every send (a poll, then redis-py's checks and a read per reply) cost a
#: ``.delay()`` loop a sixth of its CPU (measured on a 2-core box: 136-160 us per send against
#: 120-130, 6,223-7,330/s against 7,685-8,321); sixteen replies come in one read. They wait
#: in the socket's buffer meanwhile; a quiet thread's are read by the reaper, and the window's
#: bound still holds.
READ_AT = 16
#: The poll event of a peer that closed its end (Linux), with the error and hang-up ones that
#: poll always reports; 0 where the platform has none.
_RDHUP = getattr(select, "POLLRDHUP", 0)
#: Seconds without a reply after which the reaper takes a link for dead, when the connection
#: has no ``socket_timeout`` of its own (a waited-for send would time out then too).
STALE_AFTER = 30.0
_live: weakref.WeakSet[WriteBehind] = weakref.WeakSet()
_live_lock = threading.Lock()  # a WeakSet copied while another thread adds to it may raise


def _windows() -> list[WriteBehind]:
    with _live_lock:
        return list(_live)


def _flush_all_at_exit() -> None:
    """The interpreter is exiting: every thread's window is read to its end now."""
    for behind in _windows():
        behind.close()


atexit.register(_flush_all_at_exit)  # nothing to do unless a window was opened


class _Reaper:
    """Reads the replies of windows whose threads went quiet (see the module docstring)."""

    def __init__(self) -> None:
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pid: int | None = None
        #: Windows with unread replies, held here so that a thread that ends does not take
        #: its window (and what Redis may still refuse in it) away before it is read.
        self._busy: set[WriteBehind] = set()

    def reset(self) -> None:
        """In a forked child: no reaper thread, fresh locks, none of the parent's windows."""
        self._wake, self._lock, self._pid, self._busy = (
            threading.Event(),
            threading.Lock(),
            None,
            set(),
        )

    def watch(self, behind: WriteBehind) -> None:
        """``behind`` holds unread replies: make sure they are read soon (its thread calls
        this once per busy spell, not per send: ``behind.watched`` stays set until a scan
        finds it with nothing unread)."""
        with self._lock:
            behind.watched = True
            self._busy.add(behind)
            if self._pid != os.getpid():  # first use (a forked child was reset)
                self._wake = threading.Event()
                name = "celeriac-redis-reaper"
                threading.Thread(
                    target=self._run, args=(self._wake,), name=name, daemon=True
                ).start()
                self._pid = os.getpid()
            self._wake.set()

    def _run(self, wake: threading.Event) -> None:
        while True:
            wake.wait()
            time.sleep(REAP_INTERVAL)
            with self._lock:
                wake.clear()  # before the scan: a send that sets it meanwhile is seen next time
                busy = list(self._busy)
            for behind in busy:
                if behind.reap():
                    wake.set()
                    continue
                with self._lock:  # unless its thread sent again since (and watched it anew)
                    if not behind.watched:
                        self._busy.discard(behind)


_reaper = _Reaper()


def _after_fork_in_child() -> None:
    global _live_lock
    _live_lock = threading.Lock()
    _reaper.reset()


os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass(eq=False, slots=True)
class _Entry:
    """One send: its publish generator, waiting for the replies of its commands (no
    generator: the ``SCRIPT LOAD`` a new connection starts with)."""

    steps: Steps | None
    items: Sequence[Outgoing]
    payloads: Sequence[bytes]
    commands: list[bytes]
    replies: list[Any]
    #: The indexes of the commands whose replies are still to be read, in the order written.
    waiting: collections.deque[int]
    error: BaseException | None = None
    again: list[int] = field(default_factory=list)
    #: When its commands were (last) written, on the monotonic clock.
    sent_at: float = field(default_factory=time.monotonic)


class WriteBehind:
    """One thread's publishes written ahead of their replies (see the module docstring).

    ``conn`` is the thread's own connection; the lock is taken by that thread's sends and
    flushes, by the reaper (only when free: it never makes a send wait) and by a close from
    elsewhere (the transport's, at exit)."""

    def __init__(
        self,
        conn: Any,
        sha: str,
        source: str,
        load_script: Callable[[], object],
        finish: Finish,
        republish: Republish,
        window: int,
    ) -> None:
        self.conn = conn
        self.sha = sha
        self.window = window
        self.pid = os.getpid()
        self.lock = threading.RLock()  # a blocking publish inside a drain drains again
        self._load_script = load_script
        self._script = source
        self._scripted: object = None  # the socket that was sent the script
        self._finish = finish
        self._republish = republish
        self._pending: collections.deque[_Entry] = collections.deque()
        #: Connection losses since a reply was last read: past one, the window is given up
        #: (kept as failed) rather than sent again, so a Redis that keeps dropping the link
        #: (loading its data, paused) is not sent the window in a loop.
        self._breaks = 0
        #: Whether the reaper holds this window (set under the reaper's lock, cleared under
        #: this window's by the scan that finds nothing unread).
        self.watched = False
        self._outstanding = 0
        #: A poller of the connection's socket (see :meth:`_closed_by_server`), and that socket.
        self._poller: Any = None
        self._polled: Any = None
        self._reroute: list[tuple[Steps, _Entry, Any]] = []
        self._failed: list[tuple[Sequence[Outgoing], Sequence[bytes], BaseException]] = []
        with _live_lock:
            _live.add(self)

    @property
    def outstanding(self) -> int:
        """Messages written whose replies have not been read yet."""
        return self._outstanding

    def send(
        self, steps: Steps, first: Any, items: Sequence[Outgoing], payloads: Sequence[bytes]
    ) -> None:
        """Write the publish that ``steps`` stands at (``first``: its ``publish`` step) and
        return. Raises, having taken nothing, the failure of an earlier send that still fails,
        or this one's when it is known before this returns (Redis cannot be reached, or
        refused it already): the producer's retry policy may then call it again.
        """
        with self.lock:
            self._settle_failed()
            commands = [pack_command(("EVALSHA", self.sha, 0, *args)) for args in first.calls]
            entry = _Entry(
                steps, items, payloads, commands, [None] * len(commands),
                collections.deque(range(len(commands))),
            )  # fmt: skip
            load = self._script_first()
            self._pending.append(entry)
            self._outstanding += len(items)
            try:
                resp.send(self.conn, b"".join([*load, *commands]))
                self._scripted = getattr(self.conn, "_sock", None)
            except _CONNECTION_ERRORS as exc:
                self._recover(exc)
            except BaseException as exc:  # the link may hold half a command: out of step
                self._abandon(exc)
                raise
            if self._outstanding >= READ_AT or self._closed_by_server():  # see READ_AT
                while self._pending and self._readable():
                    self._read_oldest()
            while self._outstanding > self.window:
                self._read_oldest()
            if self._reroute:
                self._drain()
            if self._pending and not self.watched:
                _reaper.watch(self)
            for index, (kept, _, error) in enumerate(self._failed):
                if kept is items:  # it failed within this call (Redis is gone): not taken
                    del self._failed[index]
                    raise error

    def reap(self) -> bool:
        """The reaper's turn: read what has arrived, unless the thread is sending now;
        True while replies are still awaited."""
        if not self.lock.acquire(blocking=False):
            return True
        try:
            if self.pid != os.getpid():
                self.watched = False
                return False
            while self._pending and self._readable():
                self._read_oldest()
            if self._pending:  # nothing to read: a link gone dark answers nothing, ever
                limit = self.conn.socket_timeout or STALE_AFTER
                if time.monotonic() - self._pending[0].sent_at > limit:
                    self._recover(redis.TimeoutError(f"no reply from Redis in {limit:g} s"))
            if self._reroute:
                self._drain()
            self.watched = bool(self._pending)
            return self.watched
        except Exception:  # never the reaper's end: the owner meets it at its next send
            logger.exception("reading the replies of sync sends failed")
            self.watched = bool(self._pending)
            return self.watched
        finally:
            self.lock.release()

    def _script_first(self) -> list[bytes]:
        """``SCRIPT LOAD`` ahead of the next publish when the connection is new (a fresh or
        restarted Redis has no script; Redis runs a connection's commands in order)."""
        sock = getattr(self.conn, "_sock", None)
        if sock is not None and sock is self._scripted:
            return []
        command = pack_command(("SCRIPT", "LOAD", self._script))
        loader = _Entry(None, (), (), [command], [None], collections.deque([0]))
        self._pending.append(loader)
        return [command]

    def drain_for_blocking_use(self) -> None:
        """Read every reply, so that the connection can carry a waited-for call next."""
        with self.lock:
            self._drain()

    def flush(self) -> None:
        """Read every reply and publish again what failed; raises if that still fails."""
        with self.lock:
            self._drain()
            self._settle_failed()

    def close(self) -> None:
        """Flush; what cannot be published now is logged with its task ids (it is lost)."""
        with _live_lock:
            _live.discard(self)
        if self.pid != os.getpid():
            return  # a forked child: the window is the parent's
        try:
            self.flush()
        except Exception as exc:
            with self.lock:
                lost = [item for items, _, _ in self._failed for item in items]
                self._failed.clear()
            ids = ", ".join(item.message.id for item in lost[:20])
            logger.error(
                "closing the Redis producer: %d sent message(s) could not be published (%s)%s",
                len(lost),
                exc,
                f"; task ids: {ids}" if ids else "",
            )

    # -- reading replies (the lock held) -------------------------------------------------------
    def _closed_by_server(self) -> bool:
        """Whether the server closed the link (``poll`` says the peer hung up), so that a send
        to a Redis that went away still fails within its call: one system call on a poller
        kept for the socket, nothing read. Where there is no ``POLLRDHUP`` (not Linux), every
        send reads as before."""
        sock = getattr(self.conn, "_sock", None)
        if sock is None or _RDHUP == 0:
            return True
        if self._poller is None or self._polled is not sock:
            self._poller = select.poll()
            self._poller.register(sock, _RDHUP)
            self._polled = sock
        return bool(self._poller.poll(0))

    def _readable(self) -> bool:
        try:
            return bool(self.conn.can_read(timeout=0))
        except _CONNECTION_ERRORS as exc:
            self._recover(exc)
            return False

    def _drain(self) -> None:
        while self._pending:
            self._read_oldest()
        while self._reroute:
            steps, entry, step = self._reroute.pop(0)
            try:
                self._finish(steps, step)
            except Exception as exc:
                logger.error("publishing %d message(s) failed: %r", len(entry.items), exc)
                self._failed.append((entry.items, entry.payloads, exc))

    def _read_oldest(self) -> None:
        entry = self._pending[0]
        try:
            while entry.waiting:
                index = entry.waiting[0]
                try:
                    entry.replies[index] = self.conn.read_response()
                except redis.exceptions.NoScriptError:
                    entry.again.append(index)  # Redis lost its script cache: sent again below
                except redis.ResponseError as exc:  # the others are read: the link stays in step
                    entry.error = entry.error or exc
                entry.waiting.popleft()
                self._breaks = 0
        except _CONNECTION_ERRORS as exc:
            self._recover(exc)
            return
        except BaseException as exc:
            self._abandon(exc)
            raise
        self._pending.popleft()
        if entry.steps is None:  # the script loaded (a failure shows as NOSCRIPT next)
            return
        if entry.error is None and entry.again:
            self._send_again(entry)
            return
        self._outstanding -= len(entry.items)
        if entry.error is not None:
            self._fail(entry, entry.error)
            return
        steps = entry.steps
        try:
            step = steps.send(entry.replies)
        except StopIteration:
            return
        except Exception as exc:
            self._fail(entry, exc)
            return
        # refused: the topology changed since it was routed; routed again once the rest is read
        self._reroute.append((steps, entry, step))

    def _send_again(self, entry: _Entry) -> None:
        """Send the commands Redis refused for want of the script, once it has it again."""
        again, entry.again = entry.again, []
        entry.waiting.extend(again)
        entry.sent_at = time.monotonic()
        self._pending.append(entry)
        try:
            self._load_script()
        except Exception as exc:
            self._pending.pop()
            self._outstanding -= len(entry.items)
            self._fail(entry, exc)
            return
        try:
            resp.send(self.conn, b"".join(entry.commands[i] for i in again))
        except _CONNECTION_ERRORS as exc:
            self._recover(exc)

    def _recover(self, exc: BaseException) -> None:
        """The connection broke: every unanswered command goes again, once, on a new one;
        if that fails too, or the new one breaks before answering, the sends are kept for the
        next send or flush to publish (the blocking way, under the retry policy)."""
        self.conn.disconnect()
        self._breaks += 1
        if self._breaks > 1:
            self._breaks = 0
            self._abandon(exc)
            return
        try:
            unanswered = [e.commands[i] for e in self._pending for i in e.waiting if e.steps]
            self._pending = collections.deque(e for e in self._pending if e.steps is not None)
            if unanswered:
                load = self._script_first()
                self._pending.rotate(len(load))  # the loader goes first, as it is written
                resp.send(self.conn, b"".join([*load, *unanswered]))
                self._scripted = getattr(self.conn, "_sock", None)
                now = time.monotonic()
                for entry in self._pending:
                    entry.sent_at = now
            return
        except _CONNECTION_ERRORS as again:
            exc = again
        self.conn.disconnect()
        self._abandon(exc)

    def _abandon(self, exc: BaseException) -> None:
        """Nothing more can be read from the link: every send in the window is kept as failed."""
        self.conn.disconnect()
        while self._pending:
            entry = self._pending.popleft()
            if entry.steps is not None:
                self._outstanding -= len(entry.items)
                self._fail(entry, exc)

    def _fail(self, entry: _Entry, exc: BaseException) -> None:
        logger.error("publishing %d message(s) failed: %r", len(entry.items), exc)
        self._failed.append((entry.items, entry.payloads, exc))

    def _settle_failed(self) -> None:
        """Publish again, the blocking way, what failed earlier; raise if it still fails
        (what failed stays, for the next send or flush)."""
        if not self._failed:
            return
        self._drain()
        while self._failed:
            items, payloads, _ = self._failed[0]
            try:
                self._republish(items, payloads)
            except Exception as exc:
                count = sum(len(items) for items, _, _ in self._failed)
                raise TransportError(
                    f"{count} message(s) sent earlier could not be published: {exc}"
                ) from exc
            self._failed.pop(0)
            logger.info("%d message(s) that had failed to publish are now on Redis", len(items))


__all__ = ["WriteBehind"]
