"""A prefork child process: load the app, then run one request at a time for the parent.

The child is started by :class:`celeriac.worker.pools.prefork.PreforkPool`, forked from the fork
server that imported the app (Linux's default) or spawned as a fresh interpreter
(:mod:`~celeriac.worker.pools.starter`): never forked from the worker, which holds sockets,
threads and an event loop. Either way it finds the app by importing ``module:attr``
(:class:`ChildConfig`), at once when the server had imported it already.

The conversation on the pipe, one small picklable message each way per task::

    child  -> parent   Ready(pid) | StartFailed(reason)          once, after loading the app
    parent -> child    Run(request, soft_limit) | Stop()
    child  -> parent   Done(task_id, state, ..., retire)         after each Run

The child stores the result and sends callbacks itself (:func:`execute` + :func:`finish`, the
executor's ``run_request``); ``Done`` carries only what the parent's consumer needs to settle the
message (never the return value or the exception object, which may not pickle: the exception
travels in its stored layout). ``Done.retire`` says the child leaves after this task
(``max_tasks_per_child`` or ``max_memory_per_child``), so the parent starts a replacement at once.

Soft time limits arrive as SIGUSR1 (sent by the parent, which owns the clock). The handler raises
``SoftTimeLimitExceeded`` inside a running sync task; for an ``async def`` task it cancels the
task's root ``asyncio.Task`` on the child's one event loop, and a wrapper turns that cancellation
into ``SoftTimeLimitExceeded`` so the executor classifies it like any other exception (autoretry,
FAILURE). The handler is one-shot and armed only while task code runs, so a late signal can never
interrupt storing a result. SIGINT and SIGTERM are ignored (the parent decides about shutdown, and
a signal to the whole process group must not kill busy children), and a thread
blocks on a pipe from the parent that only reaches end-of-file when the parent is gone, so a child
never outlives its worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Coroutine, Generator
from contextvars import Context
from multiprocessing.connection import Connection
from types import FrameType
from typing import TYPE_CHECKING, Any, NamedTuple

from celeriac import signals, states
from celeriac.app.loader import find_app
from celeriac.context import Request
from celeriac.errors import NotRegistered, SoftTimeLimitExceeded
from celeriac.execution.executor import Outcome, execute, finish
from celeriac.protocol.message import safe_repr
from celeriac.results.base import exception_to_dict
from celeriac.utils.logsetup import configure
from celeriac.utils.loops import thread_loop
from celeriac.worker.pools.fetching import IDLE_WAIT, Fetching, FetchPlan, Leaving, Queues
from celeriac.worker.pools.frames import READ_SIZE, Frames, read_message

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.task import Task

logger = logging.getLogger("celeriac.worker")

#: Exit status of a child that noticed its parent is gone.
EXIT_ORPHANED = 3
#: Exit status of a child that could not load the app.
EXIT_START_FAILED = 4


class ChildConfig(NamedTuple):
    """Everything a child needs, picklable: where the app is and the per-child limits."""

    app_spec: str
    #: Settings the parent's app has that the imported module may not (``-b``/``--result-backend``).
    settings: dict[str, Any]
    hostname: str
    log_level: int
    log_format: str
    max_tasks: int | None
    max_memory: int | None
    #: The worker's log file, abbreviations unexpanded (``%I`` names this child), or None.
    logfile: str | None = None
    #: This child's place in the pool, 1..concurrency (``%i`` in a log file name).
    process_index: int | None = None
    #: ``worker_log_datefmt``, as the worker formats its lines.
    log_datefmt: str | None = None
    #: ``worker_redirect_stdouts``: the level a task's ``print()`` is logged at, or None.
    redirect_level: int | None = None
    #: The worker's environment when this child started: a child forked from the fork server
    #: (:mod:`.starter`) would otherwise have the server's, from when the pool started.
    environ: dict[str, str] | None = None
    #: Set when this child fetches its own messages (:mod:`.fetching`).
    fetch: FetchPlan | None = None


class Ready(NamedTuple):
    pid: int


class StartFailed(NamedTuple):
    reason: str


class Run(NamedTuple):
    request: Request
    #: The soft limit in seconds, only to name it in the exception's message.
    soft_limit: float | None


class Stop(NamedTuple):
    why: str = "stop"


class Done(NamedTuple):
    """A finished task, as the parent needs it to settle the message."""

    task_id: str
    state: str
    settle: str
    reason: str | None
    runtime: float
    #: The exception in its stored layout (:func:`exception_to_dict`), if any.
    exc: dict[str, Any] | None
    #: False when the child could not store the result (unknown task): the parent stores it.
    stored: bool
    #: Why this child leaves after this task, or ``None`` when it stays.
    retire: str | None
    #: The result's repr (a SUCCESS) and the traceback (a failure), for the parent's task events:
    #: the value itself stays here.
    result_repr: str | None = None
    traceback: str | None = None


class _Slot:
    """The task that is running now, as the SIGUSR1 handler sees it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.armed = False  # task code is running and may be interrupted
        self.is_async = False
        self.capture = False  # the next task made on the loop is the async task's root
        self.root: asyncio.Task[Any] | None = None
        self.fired = False
        self.text = "soft time limit exceeded"

    def arm(self, is_async: bool, soft_limit: float | None) -> None:
        self.is_async = is_async
        self.capture = is_async
        self.root = None
        self.fired = False
        if soft_limit is not None:
            self.text = f"soft time limit ({soft_limit:g}s) exceeded"
        self.armed = True  # last: a signal before this point is ignored, not half-handled

    def disarm(self) -> None:
        self.armed = False
        self.capture = False
        self.root = None

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.armed:
            return  # between tasks, or storing a result: a late signal changes nothing
        self.armed = False  # one-shot
        self.fired = True
        if not self.is_async:
            raise SoftTimeLimitExceeded(self.text)
        root = self.root
        if root is not None:  # not yet made: the wrapper raises as soon as it starts
            # thread-safe form: it also wakes the loop out of its select()
            self.loop.call_soon_threadsafe(root.cancel)

    async def _guard(self, coro: Coroutine[Any, Any, Any]) -> Any:
        if self.fired:
            coro.close()
            raise SoftTimeLimitExceeded(self.text)
        try:
            return await coro
        except asyncio.CancelledError:
            if self.fired:
                raise SoftTimeLimitExceeded(self.text) from None
            raise

    def task_factory(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Generator[Any, None, Any] | Coroutine[Any, Any, Any],
        context: Context | None = None,
    ) -> asyncio.Future[Any]:
        """The loop's task factory: wraps the first task made while an async task starts
        (``run_until_complete``'s own), so the signal handler can cancel exactly that one."""
        if self.capture and self.root is None and isinstance(coro, Coroutine):
            self.capture = False
            task = asyncio.Task(self._guard(coro), loop=loop, context=context)
            self.root = task
            return task
        return asyncio.Task(coro, loop=loop, context=context)


def resident_memory() -> int:
    """This process's resident memory in bytes: ``/proc/self/statm`` where there is one (the
    current size), else ``getrusage``'s peak (kilobytes on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)


def _watch_parent(lifeline: Connection) -> None:
    """Leave at once when the parent is gone: ``lifeline`` is never written to, so ``recv``
    returns only with end-of-file, when the parent's end closes (it exited or was killed)."""

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            lifeline.recv()
        os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="celeriac-parent-watch", daemon=True).start()


def _setup_logging(config: ChildConfig) -> None:
    """The child is a process entry point, so it configures its own logging, as the worker
    did: task logs and outcome lines reach the worker's stderr or log file (this child's, if its
    name has ``%i``/``%I``), at the worker's level; ``setup_logging`` receivers the app connects
    take it over, as in the worker."""
    configure(
        config.log_level,
        config.logfile,
        nodename=config.hostname,
        index=config.process_index,
        fmt=config.log_format,
        datefmt=config.log_datefmt,
        redirect_level=config.redirect_level,
    )


def _load_app(config: ChildConfig) -> Celeriac:
    app = find_app(config.app_spec)
    changed = {k: v for k, v in config.settings.items() if getattr(app.conf, k, None) != v}
    if changed:
        app.config_from_object(changed)
    return app


def execute_here(
    task: Task[Any, Any], request: Request, slot: _Slot, soft_limit: float | None, hostname: str
) -> Outcome:
    """Run ``request`` here with the soft limit's handler armed, then store its outcome and
    send its callbacks (the executor's ``run_request``, made interruptible)."""
    slot.arm(task.is_async, soft_limit)
    try:
        outcome = execute(task, request)
        slot.disarm()
    except BaseException as exc:  # a soft limit landing just after the body, or SystemExit
        slot.disarm()
        outcome = Outcome(
            states.FAILURE, exc=exc, traceback="".join(traceback.format_exception(exc))
        )
    finish(task, request, outcome, hostname)
    return outcome


def _run_one(app: Celeriac, slot: _Slot, message: Run, hostname: str) -> Done:
    request = message.request
    task: Task[Any, Any] | None = app.tasks.get(request.task)
    if task is None:
        missing = NotRegistered(request.task)
        return Done(
            request.id, states.FAILURE, "ack", str(missing), 0.0, exception_to_dict(missing),
            stored=False, retire=None,
        )  # fmt: skip
    outcome = execute_here(task, request, slot, message.soft_limit, hostname)
    return Done(
        request.id,
        outcome.state,
        outcome.settle,
        outcome.reason,
        outcome.runtime,
        exception_to_dict(outcome.exc) if outcome.exc is not None else None,
        stored=True,
        retire=None,
        result_repr=safe_repr(outcome.value) if outcome.state == states.SUCCESS else None,
        traceback=outcome.traceback,
    )


def _retire_reason(config: ChildConfig, done: int) -> str | None:
    if config.max_tasks is not None and done >= config.max_tasks:
        return f"it ran {done} tasks (max_tasks_per_child={config.max_tasks})"
    if config.max_memory is not None:
        rss = resident_memory()
        if rss > config.max_memory:
            return (
                f"its resident memory {rss / 2**20:.1f} MiB is over "
                f"max_memory_per_child={config.max_memory / 2**20:.1f} MiB"
            )
    return None


def _pipe_loop(
    app: Celeriac,
    config: ChildConfig,
    conn: Connection,
    slot: _Slot,
    frames: Frames,
    queued: list[Any],
) -> None:
    """Run what the worker sends, one ``Run`` at a time, until told to stop or retiring."""
    done = 0
    fd = conn.fileno()
    while True:
        try:
            message = read_message(fd, frames, queued)
        except EOFError:
            return  # the parent closed our pipe: it is gone or gave up on us
        if isinstance(message, Stop):
            return
        done += 1
        if _answer(app, config, conn.send, slot, message, done):
            return


def _answer(
    app: Celeriac,
    config: ChildConfig,
    send: Callable[[Any], None],
    slot: _Slot,
    message: Run,
    done: int,
) -> bool:
    """Run a request the worker sent and report it; True when this child retires now (its
    ``done``-th task was the last)."""
    report = _run_one(app, slot, message, config.hostname)
    retire = _retire_reason(config, done)
    send(report._replace(retire=retire))
    return retire is not None


def _locked(conn: Connection) -> Callable[[Any], None]:
    """``conn.send`` for two threads (the main one and the holder's): a message is written in
    more than one piece, and two interleaved would garble both."""
    lock = threading.Lock()

    def send(message: Any) -> None:
        with lock:
            conn.send(message)

    return send


def _fetch_loop(
    app: Celeriac,
    config: ChildConfig,
    conn: Connection,
    slot: _Slot,
    frames: Frames,
    queued: list[Any],
) -> None:
    """Fetch and run messages (:mod:`.fetching`), and what the worker sends, until told to
    stop or retiring."""
    plan = config.fetch
    assert plan is not None
    transport = app.create_transport()
    fetcher = transport.fetcher()
    if fetcher is None:  # the worker checked: only a transport that has one gets here
        raise RuntimeError("this broker has no fetcher")
    send = _locked(conn)
    fetching = Fetching(app, plan, fetcher, config.hostname, send, transport.fetcher)
    # what a claim dead-letters (past max_deliveries) goes to the worker, which records its end
    transport.watch_dead_letters(fetching.dead_lettered)
    signal.signal(signal.SIGALRM, slot.on_signal)  # the soft limit of a task it fetched
    fd = conn.fileno()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    holder = fetching.holder
    done = 0
    fetching.publish()
    try:
        while True:
            idle = not fetching.queues  # told to fetch from nothing (yet, or any more): wait
            if idle:
                fetching.give_back_held()
                fetching.flush()
            if queued or idle or poller.poll(0):  # the worker wrote: read it all first
                try:
                    message = read_message(fd, frames, queued)
                except EOFError:
                    break
                if isinstance(message, Stop):
                    break
                if fetching.heard(message):
                    continue
                done += 1
                if _answer(app, config, send, slot, message, done):
                    break
                continue
            held = holder.take()  # the next of the last claim, unless given back
            if held is not None:
                if held.queue not in fetching.queues:  # cancel_consumer while it was held
                    fetching.give_back([held])
                    continue
                delivery = held
            else:
                deliveries = fetching.fetch(IDLE_WAIT)
                if not deliveries:
                    continue
                if poller.poll(0):  # woken to stop, maybe: what it claimed waits for the answer
                    data = os.read(fd, READ_SIZE)
                    if data:
                        queued.extend(frames.feed(data))
                    if not data or any(isinstance(m, Stop) for m in queued):
                        fetching.give_back(deliveries)
                        break
                    wanted = [m.names for m in queued if isinstance(m, Queues)]
                    if wanted:  # a queue it no longer fetches from (a stop, cancel_consumer)
                        dropped = [d for d in deliveries if d.queue not in wanted[-1]]
                        fetching.give_back(dropped)
                        deliveries = [d for d in deliveries if d.queue in wanted[-1]]
                        if not deliveries:
                            continue
                delivery = deliveries[0]
                if len(deliveries) > 1:  # the rest of a batch: run next, unless given back
                    holder.hold(deliveries[1:])
            fetching.run(delivery, slot)
            done += 1
            retire = _retire_reason(config, done)
            if retire is not None:
                fetching.give_back_held()
                fetching.flush()
                send(Leaving(retire))
                break
    finally:
        fetching.close()  # what is still held goes back (a stop, a retirement, a broken pipe)


def child_main(config: ChildConfig, conn: Connection, lifeline: Connection) -> None:
    """The child's main: load the app, say ready, then run requests until told to stop."""
    # The parent decides about shutdown: a SIGINT or SIGTERM sent to the whole process group
    # (Ctrl-C, systemd's default KillMode, `timeout`) must not kill a busy child mid-task.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _watch_parent(lifeline)
    if config.environ is not None and dict(os.environ) != config.environ:
        os.environ.clear()
        os.environ.update(config.environ)
    try:
        app = _load_app(config)
        _setup_logging(config)  # after the app: its module connects setup_logging receivers
    except BaseException as exc:  # any import-time failure is reported, not a traceback
        conn.send(StartFailed(f"cannot load the app {config.app_spec!r}: {exc}"))
        sys.exit(EXIT_START_FAILED)
    signals.worker_process_init.send(config.hostname)
    loop = thread_loop()  # the main thread's loop: one per child, reused by every async task
    slot = _Slot(loop)
    loop.set_task_factory(slot.task_factory)
    signal.signal(signal.SIGUSR1, slot.on_signal)
    conn.send(Ready(os.getpid()))
    frames, queued = Frames(), list[Any]()
    try:
        if config.fetch is not None:
            _fetch_loop(app, config, conn, slot, frames, queued)
        else:
            _pipe_loop(app, config, conn, slot, frames, queued)
    finally:
        app.close()
        loop.close()
    # leaving on its own (told to stop, or retiring): Celery's process destructor signal
    signals.worker_process_shutdown.send(config.hostname, pid=os.getpid(), exitcode=0)
