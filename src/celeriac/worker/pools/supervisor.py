"""The prefork pool's children: start them, watch them from the event loop, reap and replace them.

:class:`Supervisor` keeps ``size`` children taking work. It owns every process it starts and
joins each one: a child's exit is seen through its process sentinel (``loop.add_reader``), what
it sent before dying is read first, then its exit status is collected without blocking. A child
that retires (it said so after a task, or the pool killed it) stops counting at once and a
replacement starts, so capacity never drops; a child that fails to start is retried with a
doubling back-off instead of in a tight loop.

Each child has at most one :class:`Job`; the job's future is resolved exactly once, by
:meth:`Supervisor.end_job`, with the child's ``Done`` or a :class:`Killed` verdict, and its timers
are cancelled there. Whoever comes second (a late ``Done`` after a hard kill, a death after a
terminate) finds no job and changes nothing. Everything here runs on the worker's event loop.

**Hand-off without a loop turn.** Requests wait here for a child (the pool takes ``depth`` 2 per
unit of concurrency, so under load one waits per busy child). The callback that reads a child's
``Done`` sends that child the first waiting request at once, in the same callback, before any
other event-loop work: the child's idle gap between two tasks is one pipe read and one write in
the parent, not the several loop turns a woken coroutine would need (measured on a 2-core box
draining no-op tasks: each child waited for the parent about half of its time before). A
waiting request has not reached any child, so it can still be withdrawn (warm shutdown gives it
back to the broker) or found revoked when its turn comes (it then never runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections import deque
from collections.abc import Callable, Collection, Container
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from celeriac.context import Request
from celeriac.worker.pools.child import ChildConfig, Done, Ready, StartFailed, Stop, child_main
from celeriac.worker.pools.frames import READ_SIZE, Frames

if TYPE_CHECKING:
    from celeriac.task import Task


class Fetching(Protocol):
    """The pool's side of children that fetch their own messages (:mod:`.prefork`)."""

    def nudge(self, child: Child) -> None:
        """End ``child``'s wait for messages: something was sent to it."""

    def heard(self, child: Child, message: object) -> bool:
        """Handle a message of the fetching kind from ``child``; False if it is not one."""

    def gone(self, child: Child, killed: Killed) -> None:
        """``child`` was reaped: account for the task it ran from the board, if any."""

    def busy(self, child: Child) -> bool:
        """Whether ``child`` runs a task it fetched itself now."""


logger = logging.getLogger("celeriac.worker")

#: Back-off after a child fails to start, doubling up to the maximum.
RESTART_DELAY = 0.5
RESTART_DELAY_MAX = 30.0
#: How often to look again for the exit status of a child whose sentinel has closed.
REAP_POLL = 0.005


class Killed(NamedTuple):
    """How a job ended when its child could not say ``Done``."""

    kind: Literal["time_limit", "terminated", "lost", "shutdown"]
    detail: str


@dataclass(eq=False, slots=True)
class Job:
    task: Task[Any, Any]
    request: Request
    future: asyncio.Future[Done | Killed | None]
    timers: list[asyncio.TimerHandle] = field(default_factory=list)


#: Called when a waiting request is sent to a child, with that child and its new job: the pool
#: arms its time limits and tells the consumer the task started (an early ack) there.
OnSend = Callable[["Child", Job], None]


@dataclass(eq=False, slots=True)
class _Waiter:
    """A request waiting for an idle child. Its future becomes the job's once it is sent, so
    it gets the verdict (one wake-up of the caller per task, not one when sent and one when
    done), or ``None`` when the request was found revoked at its turn."""

    task: Task[Any, Any]
    request: Request
    payload: bytes
    on_send: OnSend
    future: asyncio.Future[Done | Killed | None]


@dataclass(eq=False, slots=True)
class Child:
    process: BaseProcess
    conn: Connection
    pid: int
    #: Resolves with ``None`` once ready, or with why it could not start.
    ready: asyncio.Future[str | None]
    exited: asyncio.Future[int]
    state: Literal["starting", "idle", "busy", "gone"] = "starting"
    job: Job | None = None
    #: Why it leaves; a retiring child takes no new work and no longer counts toward ``size``.
    retiring: str | None = None
    stop_sent: bool = False
    start_error: str | None = None
    #: What its pipe brought that is not a whole message yet.
    frames: Frames = field(default_factory=Frames)
    #: Its place on the board when it fetches its own messages (:mod:`.fetching`), else None.
    slot: int | None = None
    #: How the pool ended the task it ran from the board (a hard limit, a terminate, a cold
    #: stop), when it killed it; else its death is a loss.
    killed: Killed | None = None


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class Supervisor:
    """Starts and replaces children so that ``size`` of them take work."""

    def __init__(
        self,
        ctx: SpawnContext | ForkServerContext,
        loop: asyncio.AbstractEventLoop,
        size: int,
        make_config: Callable[[], ChildConfig],
        revoked: Container[str] = frozenset(),
        fetching: Fetching | None = None,
    ) -> None:
        self.size = size
        self.children: set[Child] = set()
        self.stopping = False
        self._ctx = ctx
        self._loop = loop
        self._make_config = make_config
        self._revoked = revoked
        #: Idle children (some may have retired or died since: skipped when taken).
        self._idle: deque[Child] = deque()
        self._waiters: deque[_Waiter] = deque()
        # never written to: children see end-of-file on it when this process is gone
        self._lifeline = ctx.Pipe(duplex=False)
        self._failures = 0
        self._refill: asyncio.TimerHandle | None = None
        self._started = 0
        #: The pool's side of children that fetch their own messages, if they do.
        self.fetching = fetching

    # -- what the pool asks ---------------------------------------------------------------------
    def active(self) -> list[Child]:
        """The children that count toward ``size``: started or starting, not retiring."""
        return [c for c in self.children if c.retiring is None and c.state != "gone"]

    async def take(
        self, task: Task[Any, Any], request: Request, payload: bytes, on_send: OnSend
    ) -> Done | Killed | None:
        """Send ``payload`` (a pickled ``Run``) to the first idle child, now or as soon as one
        is free, in request order; ``on_send`` runs at the moment it is sent. Returns how its
        job ended (:meth:`end_job`), or ``None`` when the request was revoked before its turn
        came (it was never sent)."""
        waiter = _Waiter(task, request, payload, on_send, self._loop.create_future())
        self._waiters.append(waiter)
        self._dispatch()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            raise

    def withdraw(self, task_ids: Collection[str]) -> set[str]:
        """Take back waiting requests (no child has them): the ids withdrawn. Their ``take``
        never returns; the caller cancels it (warm shutdown requeues their messages)."""
        wanted = set(task_ids)
        kept: deque[_Waiter] = deque()
        withdrawn: set[str] = set()
        for waiter in self._waiters:
            if waiter.request.id in wanted and not waiter.future.done():
                withdrawn.add(waiter.request.id)
            else:
                kept.append(waiter)
        self._waiters = kept
        return withdrawn

    def _idle_child(self) -> Child | None:
        while self._idle:
            child = self._idle.popleft()
            if child.state == "idle" and child.retiring is None and child.job is None:
                if self.fetching is not None and self.fetching.busy(child):
                    # running what it fetched: another one that waits for messages, if any
                    free = next(
                        (
                            c
                            for c in self._idle
                            if c.state == "idle"
                            and c.retiring is None
                            and c.job is None
                            and not self.fetching.busy(c)
                        ),
                        None,
                    )
                    if free is not None:
                        self._idle.remove(free)
                        self._idle.appendleft(child)
                        child = free
                return child
        return None

    def _dispatch(self) -> None:
        """Pair waiting requests with idle children, in order (see the module docstring)."""
        while self._waiters:
            waiter = self._waiters[0]
            if waiter.future.done():  # its caller was cancelled
                self._waiters.popleft()
                continue
            if waiter.request.id in self._revoked:
                self._waiters.popleft()
                waiter.future.set_result(None)
                continue
            child = self._idle_child()
            if child is None:
                return
            try:
                child.conn.send_bytes(waiter.payload)
            except OSError as exc:  # it died just now; its sentinel will reap it
                self.retire(child, f"its pipe broke ({exc})")
                continue
            if self.fetching is not None:
                self.fetching.nudge(child)  # it may be waiting for messages of its own
            self._waiters.popleft()
            child.state = "busy"
            job = child.job = Job(waiter.task, waiter.request, waiter.future)
            try:
                waiter.on_send(child, job)
            except Exception:  # never leave the hand-off half done
                logger.exception("prefork: error while starting %s", waiter.request.id)

    def _became_idle(self, child: Child) -> None:
        child.state = "idle"
        self._idle.append(child)
        self._dispatch()

    def end_job(self, child: Child, verdict: Done | Killed) -> None:
        """Resolve ``child``'s job with ``verdict``, once; cancel its timers."""
        job, child.job = child.job, None
        if job is None:
            return
        for timer in job.timers:
            timer.cancel()
        if not job.future.done():
            job.future.set_result(verdict)

    def retire(self, child: Child, reason: str) -> None:
        """``child`` leaves (it said so, or we kill it): start its replacement now."""
        if child.retiring is None:
            child.retiring = reason
            logger.info("prefork: replacing child %d: %s", child.pid, reason)
        self.fill()

    def dismiss(self, child: Child, reason: str) -> None:
        """``child`` leaves without a replacement: now if it has no task, else after it."""
        child.retiring = child.retiring or reason
        if child.state != "busy":
            self.send_stop(child)

    def signal(self, child: Child, signum: int) -> None:
        if child.state == "gone":
            return  # reaped: the pid may belong to someone else now
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)

    def send_stop(self, child: Child) -> None:
        if child.stop_sent or child.state == "gone":
            return
        child.stop_sent = True
        with contextlib.suppress(OSError):  # already gone: its sentinel reaps it
            child.conn.send(Stop())
            if self.fetching is not None:
                self.fetching.nudge(child)

    def fill(self) -> None:
        """Start children until the active ones number ``size``."""
        if self.stopping or self._refill is not None:
            return
        for _ in range(self.size - len(self.active())):
            if not self._spawn():
                self._schedule_refill()
                return

    async def wait_exited(self) -> None:
        """Wait until every child has been reaped, then close the lifeline."""
        children = list(self.children)
        if children:
            await asyncio.gather(*(c.exited for c in children))
        for end in self._lifeline:
            end.close()

    def halt(self) -> None:
        """Start no more children (the pool stops)."""
        self.stopping = True
        if self._refill is not None:
            self._refill.cancel()
            self._refill = None

    # -- starting ---------------------------------------------------------------------------------
    def _schedule_refill(self) -> None:
        delay = min(RESTART_DELAY * 2 ** max(0, self._failures - 1), RESTART_DELAY_MAX)
        logger.warning("prefork: starting children again in %.1fs", delay)

        def refill() -> None:
            self._refill = None
            self.fill()

        self._refill = self._loop.call_later(delay, refill)

    def _spawn(self) -> bool:
        self._started += 1
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        config = self._make_config()
        process = self._ctx.Process(
            target=child_main,
            args=(config, child_end, self._lifeline[0]),
            name=f"celeriac-prefork-{self._started}",
        )
        try:
            process.start()
        except OSError as exc:
            logger.error("prefork: cannot start a child: %s", exc)
            parent_end.close()
            self._failures += 1
            return False
        finally:
            child_end.close()  # the child holds its own copy now
        assert process.pid is not None
        loop = self._loop
        child = Child(process, parent_end, process.pid, loop.create_future(), loop.create_future())
        child.slot = config.fetch.slot if config.fetch is not None else None
        self.children.add(child)
        loop.add_reader(parent_end.fileno(), self._on_readable, child)
        loop.add_reader(process.sentinel, self._on_sentinel, child)
        return True

    # -- events from children ---------------------------------------------------------------------
    def _on_readable(self, child: Child) -> None:
        fd = child.conn.fileno()
        try:
            data = os.read(fd, READ_SIZE)  # the loop saw it readable: this does not block
        except OSError:
            data = b""
        if not data:
            self._loop.remove_reader(fd)  # it exited: the sentinel takes over
            return
        for message in child.frames.feed(data):
            self._on_message(child, message)

    def _on_message(self, child: Child, message: object) -> None:
        if isinstance(message, Done):
            self.end_job(child, message)
            if message.retire is not None:
                self.retire(child, message.retire)  # it exits by itself
            elif child.retiring is not None:
                self.send_stop(child)
            elif child.state != "gone":
                self._became_idle(child)
        elif isinstance(message, Ready):
            self._failures = 0
            if not child.ready.done():
                child.ready.set_result(None)
            if child.state == "gone":
                pass  # read after its death: nothing to do but note that it was ready
            elif child.retiring is None:
                self._became_idle(child)
            else:
                if child.state == "starting":
                    child.state = "idle"
                self.send_stop(child)
        elif isinstance(message, StartFailed):
            child.start_error = message.reason
        elif self.fetching is not None and self.fetching.heard(child, message):
            pass
        else:
            logger.error("prefork: child %d sent an unknown message %.100r", child.pid, message)

    def _loss(self, child: Child, how: str) -> Killed:
        if self.stopping and child.retiring == "the worker stopped (cold)":
            return Killed("shutdown", "the worker stopped (cold)")
        return Killed("lost", f"child {child.pid} {how} while running it")

    def _on_sentinel(self, child: Child) -> None:
        self._loop.remove_reader(child.process.sentinel)
        self._reap(child)

    def _reap(self, child: Child) -> None:
        """The child's sentinel closed: read what it sent before dying, then account for it."""
        code = child.process.exitcode  # polls without blocking
        if code is None:  # closing its fds precedes becoming reapable by a hair
            self._loop.call_later(REAP_POLL, self._reap, child)
            return
        conn = child.conn
        child.state = "gone"  # first: what it said last must not hand it new work
        with contextlib.suppress(OSError):
            while conn.poll():  # also true at end of file, which ends the loop
                data = os.read(conn.fileno(), READ_SIZE)
                if not data:
                    break
                for message in child.frames.feed(data):
                    self._on_message(child, message)
        self._loop.remove_reader(conn.fileno())
        conn.close()
        self.children.discard(child)
        child.process.close()
        how = describe_exit(code)
        job = child.job
        if job is not None:
            self.end_job(child, Killed("lost", f"child {child.pid} {how} while running it"))
        if child.slot is not None and self.fetching is not None:  # before its slot is reused
            self.fetching.gone(child, child.killed or self._loss(child, how))
        never_ready = not child.ready.done()
        if never_ready:
            child.ready.set_result(child.start_error or f"it exited ({how}) before it was ready")
        child.exited.set_result(code)
        if child.retiring is not None or self.stopping:
            self.fill()
            return
        child.retiring = how
        if never_ready:
            self._failures += 1
            logger.error(
                "prefork: child %d could not start: %s", child.pid, child.start_error or how
            )
            if self._refill is None:
                self._schedule_refill()
            return
        running = f" while running {job.task.name}[{job.request.id}]" if job else ""
        logger.info("prefork: replacing child %d: it ended (%s)%s", child.pid, how, running)
        self.fill()
