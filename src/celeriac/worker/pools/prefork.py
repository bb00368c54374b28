"""The ``prefork`` pool: each task runs in a child process that the worker can kill.

Children are forked from a fork server that imported the app from ``PoolOptions.app_spec``
(Linux's default) or spawned as fresh interpreters that import it (``worker_pool_start_method``;
see :mod:`~celeriac.worker.pools.starter` and :mod:`~celeriac.worker.pools.child`), never forked
from a worker that holds sockets, threads and an event loop. It needs POSIX signals: SIGUSR1 for
soft time limits, SIGKILL to stop a child (children ignore SIGTERM and SIGINT: only the parent
decides when they stop).

**The parent's event loop never blocks on a child.** Each child's pipe and process sentinel are
watched with ``loop.add_reader``: a message or an exit wakes the loop, which reads one small
message that is already complete (a child writes each message in one write). No reader thread
per child, so no thread hop per task and nothing to join; a child's exit is seen through its
sentinel even when it dies mid-write, and anything it sent before dying is read first.

**One task per child, handed only to an idle one.** ``run`` queues the request for the first
idle child (``depth`` 2: the consumer hands over up to two requests per child, so under load
the next one already waits in the parent when a child finishes, and the callback that reads the
child's ``Done`` sends it at once; see :mod:`~celeriac.worker.pools.supervisor`). A child never
holds more than the task it runs, so what waits can still be withdrawn or found revoked. Then
``run`` awaits a future that exactly one of these resolves: the child's ``Done``, the hard time
limit, ``terminate``, the child's death, or a cold stop. The loser of any race finds the job
gone and does nothing, so a task is settled once.

**Who stores what.** The child stores its own result (and sends callbacks). When the child cannot
(killed at the hard limit, terminated, lost), the parent stores FAILURE (``TimeLimitExceeded``,
``WorkerLostError``) or REVOKED itself with the executor's :func:`finish`, in a thread; except an
``acks_late`` task with ``reject_on_worker_lost``, whose message is requeued and nothing stored.

**Capacity never drops.** A child that retires (``max_tasks_per_child``, ``max_memory_per_child``,
killed, lost) stops counting at once and a replacement starts; one INFO line says why. Every child
started is reaped, and a child whose parent dies exits by itself. Starting, watching and reaping
children is :class:`~celeriac.worker.pools.supervisor.Supervisor`'s job; this module is the pool
contract on top of it: dispatch, time limits, terminate, resize, and the outcomes of lost tasks.

A script that runs a prefork worker in code must guard its entry point with
``if __name__ == "__main__":``: children import the main module again (as with ``spawn``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import signal
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from celeriac import signals, states
from celeriac.context import Request
from celeriac.errors import (
    ImproperlyConfigured,
    TaskRevokedError,
    Terminated,
    TimeLimitExceeded,
    WorkerLostError,
)
from celeriac.execution.executor import Outcome, Settle, finish
from celeriac.results.base import exception_from_dict
from celeriac.transports.base import Delivery, Transport
from celeriac.utils import logsetup
from celeriac.utils.logs import LOG_FORMAT
from celeriac.worker.pools import starter
from celeriac.worker.pools.base import OnStart, Pool, PoolOptions, effective_time_limits
from celeriac.worker.pools.board import Board
from celeriac.worker.pools.child import ChildConfig, Done, Run
from celeriac.worker.pools.fetching import (
    DeadLettered,
    FetchPlan,
    Handoff,
    HandOver,
    Leaving,
    Queues,
    Revoke,
)
from celeriac.worker.pools.overseer import IDLE_TICK, TICK, Host, Overseer
from celeriac.worker.pools.supervisor import Child, Job, Killed, Supervisor
from celeriac.worker.state import RevokedSet, WorkerState

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.task import Task

logger = logging.getLogger("celeriac.worker")

#: How long ``start`` waits for the first children to load the app.
START_TIMEOUT = 60.0
#: Seconds between SIGTERM and SIGKILL when terminating a task.
TERMINATE_GRACE = 1.0
#: Slots on the board at least (children beyond them, after the autoscaler grew the pool,
#: take their tasks from the pool).
BOARD_SLOTS = 64
_SETTLES: dict[str, Settle] = {"ack": "ack", "requeue": "requeue", "reject": "reject"}


class PreforkPool(Pool):
    """Runs each task in one of ``concurrency`` child processes (see the module docstring)."""

    name = "prefork"
    depth: ClassVar[int] = 2
    #: The signal ``terminate`` stops a task with, as ``task_revoked`` reports it (children
    #: ignore it, so SIGKILL follows ``TERMINATE_GRACE`` later).
    terminate_signal: ClassVar[int] = signal.SIGTERM

    def __init__(
        self,
        app: Celeriac,
        concurrency: int,
        hostname: str,
        options: PoolOptions | None = None,
    ) -> None:
        super().__init__(app, concurrency, hostname, options)
        self._children: Supervisor | None = None
        #: Each child's place in the pool (``%i``), by pid; see :meth:`_next_index`.
        self._index_of: dict[int, int] = {}
        self._pending_index: int | None = None
        #: The start method acquired from :mod:`.starter` while the pool runs (released once).
        self._start_method: str | None = None
        # children that fetch their own messages (see fetching.py and overseer.py)
        self._board: Board | None = None
        self._overseer: Overseer | None = None
        self._queues: tuple[str, ...] = ()
        self._handed_over: frozenset[str] = frozenset()
        self._everything = False
        self._tick: asyncio.TimerHandle | None = None

    # -- life ---------------------------------------------------------------------------------
    async def start(self) -> None:
        if not self.options.app_spec:
            raise ImproperlyConfigured(
                "the prefork pool needs an importable app: run with -A module[:attr], or define "
                "the app at module level so that its children can import it"
            )
        if not hasattr(signal, "SIGUSR1"):
            raise ImproperlyConfigured(
                "the prefork pool needs POSIX signals (Linux, macOS); use -P threads here"
            )
        method = starter.start_method(self.options.start_method)
        context = starter.acquire(method, self.options.app_spec)
        self._start_method = method
        if self.options.fetch and self.app.create_transport().fetcher() is not None:
            self._board = Board(max(self.concurrency, BOARD_SLOTS))
        children = self._children = Supervisor(
            context,
            asyncio.get_running_loop(),
            self.concurrency,
            self._child_config,
            self.revoked,
            fetching=self if self._board is not None else None,
        )
        children.fill()
        first = list(children.children)
        try:
            errors = await asyncio.wait_for(
                asyncio.gather(*(c.ready for c in first)), START_TIMEOUT
            )
        except TimeoutError:
            await self.stop(wait=False)
            raise ImproperlyConfigured(
                f"prefork children did not load {self.options.app_spec!r} in {START_TIMEOUT:g}s"
            ) from None
        failed = [e for e in errors if e is not None]
        if failed:
            await self.stop(wait=False)
            raise ImproperlyConfigured(f"a prefork child could not start: {failed[0]}")

    def _child_config(self) -> ChildConfig:
        """The next child's configuration; the supervisor asks for it just before it starts
        each child, so this is also where Celery's ``worker_before_create_process`` is sent."""
        signals.worker_before_create_process.send(self)
        setup = logsetup.current()
        index = self._next_index()
        return ChildConfig(
            app_spec=str(self.options.app_spec),
            settings={
                "broker_url": self.app.conf.broker_url,
                "result_backend": self.app.conf.result_backend,
            },
            hostname=self.hostname,
            log_level=logging.getLogger("celeriac").getEffectiveLevel(),
            log_format=setup.format if setup is not None else LOG_FORMAT,
            max_tasks=self.options.max_tasks_per_child,
            max_memory=self.options.max_memory_per_child,
            logfile=setup.logfile if setup is not None else None,
            process_index=index,
            log_datefmt=setup.datefmt if setup is not None else None,
            redirect_level=setup.redirect_level if setup is not None else None,
            environ=dict(os.environ),
            fetch=self._plan(index - 1),
        )

    def _plan(self, slot: int) -> FetchPlan | None:
        """What a child that fetches its own messages starts with; None: it takes its tasks
        from the pool (no board, or no slot left on it after the autoscaler grew the pool)."""
        board = self._board
        if board is None or slot >= board.count:
            return None
        revoked = self.revoked
        keys: list[Any] = revoked.keys() if isinstance(revoked, RevokedSet) else []
        return FetchPlan(
            board.shared(),
            slot,
            self._queues,
            self._handed_over,
            frozenset(keys),
            self.options.time_limit,
            self.options.soft_time_limit,
            self._everything,
        )

    def _next_index(self) -> int:
        """The lowest place (1, 2, ...) no live child holds, as Celery numbers its children
        for ``%i``: a replacement takes the place of the child it replaces.

        The supervisor asks for a configuration, then starts that child and adds it to its
        set before it asks again; so the one child of the set this pool has no place for yet
        is the one started with the place handed out last time.
        """
        children = self._children
        live = {c.pid: c for c in children.children if c.state != "gone"} if children else {}
        if self._pending_index is not None:
            for pid in live.keys() - self._index_of.keys():
                self._index_of[pid] = self._pending_index
                break
        self._index_of = {pid: i for pid, i in self._index_of.items() if pid in live}
        taken = set(self._index_of.values())
        index = next(i for i in range(1, len(taken) + 2) if i not in taken)
        self._pending_index = index
        return index

    async def stop(self, wait: bool = True) -> None:
        """Warm: each child finishes its task, then exits. Cold: kill them all now. Both join."""
        children = self._children
        if children is None:
            return
        children.halt()
        for child in list(children.children):
            child.retiring = child.retiring or "the pool stops"
            if wait:
                children.send_stop(child)  # a busy child reads it after its task
            else:
                cold = Killed("shutdown", "the worker stopped (cold)")
                children.end_job(child, cold)
                child.killed = child.killed or cold
                children.signal(child, signal.SIGKILL)
        await children.wait_exited()
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self._overseer is not None:
            await self._overseer.settled()  # the ends of the board's tasks, recorded
            watchers = self._overseer.state.revoked.watchers
            if self._revoked_more in watchers:
                watchers.remove(self._revoked_more)
        if self._board is not None:
            self._board.close()
            self._board = None
        method, self._start_method = self._start_method, None
        if method is not None:  # every child is gone: the fork server may go too
            await asyncio.to_thread(starter.release, method)

    async def resize(self, concurrency: int) -> None:
        """Grow by starting children; shrink by retiring starting and idle children first,
        then busy ones after their current task."""
        self.concurrency = max(1, concurrency)
        children = self._children
        if children is None:
            return
        children.size = self.concurrency
        rank = {"starting": 0, "idle": 1, "busy": 2, "gone": 3}
        active = sorted(children.active(), key=lambda c: rank[c.state])
        for child in active[: max(0, len(active) - self.concurrency)]:
            logger.info("prefork: retiring child %d (the pool shrinks)", child.pid)
            children.dismiss(child, f"the pool shrinks to {self.concurrency}")
        children.fill()

    def withdraw(self, task_ids: Collection[str]) -> set[str]:
        """Requests still waiting for a child (none has them) come back (warm shutdown)."""
        return set() if self._children is None else self._children.withdraw(task_ids)

    def child_pids(self) -> list[int]:
        """The pids of the children that take work now (started, not retiring)."""
        if self._children is None:
            return []
        return sorted(c.pid for c in self._children.active() if c.state in ("idle", "busy"))

    # -- running a task -----------------------------------------------------------------------
    async def run(
        self, task: Task[Any, Any], request: Request, on_start: OnStart | None = None
    ) -> Outcome:
        children = self._children
        assert children is not None, "pool not started"
        hard, soft = effective_time_limits(task, request, self.options)
        if soft is not None and hard is not None and soft >= hard:
            soft = None  # it could never fire first
        try:  # pickled here, before taking a child, so a bad request costs no child
            payload = pickle.dumps(Run(request, soft), pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            outcome = Outcome(states.FAILURE, exc=exc, reason=f"cannot pass it to a child: {exc}")
            await asyncio.to_thread(finish, task, request, outcome, self.hostname)
            return outcome
        loop = asyncio.get_running_loop()

        def sent(child: Child, job: Job) -> None:  # in the supervisor's hand-off callback
            if on_start is not None:
                on_start()
            if soft:
                job.timers.append(loop.call_later(soft, self._soft_limit, child, job, soft))
            if hard:
                job.timers.append(loop.call_later(hard, self._hard_limit, child, job, hard))

        verdict = await children.take(task, request, payload, sent)
        if verdict is None:  # revoked while it waited for a child: it never ran
            outcome = Outcome(states.REVOKED, exc=TaskRevokedError("revoked"), reason="revoked")
            await asyncio.to_thread(finish, task, request, outcome, self.hostname)
            return outcome
        if isinstance(verdict, Done):
            return await self._from_done(task, request, verdict)
        return await self._from_killed(task, request, verdict)

    async def _from_done(self, task: Task[Any, Any], request: Request, done: Done) -> Outcome:
        outcome = Outcome(
            done.state,
            settle=_SETTLES.get(done.settle, "ack"),
            exc=exception_from_dict(done.exc) if done.exc is not None else None,
            reason=done.reason,
            runtime=done.runtime,
            traceback=done.traceback,
            result_repr=done.result_repr,
        )
        if not done.stored:
            await asyncio.to_thread(finish, task, request, outcome, self.hostname)
        return outcome

    async def _from_killed(self, task: Task[Any, Any], request: Request, killed: Killed) -> Outcome:
        if killed.kind == "terminated":
            logger.info("Task %s[%s] terminated", task.name, request.id)
            outcome = Outcome(states.REVOKED, exc=Terminated("terminated"), reason="terminated")
        elif killed.kind == "time_limit":
            keep = task.option("acks_on_failure_or_timeout", "task_acks_on_failure_or_timeout")
            outcome = Outcome(
                states.FAILURE,
                settle="reject" if task.acks_late and not keep else "ack",
                exc=TimeLimitExceeded(killed.detail),
                reason=killed.detail,
            )
        else:
            requeue = killed.kind == "shutdown" or task.option(
                "reject_on_worker_lost", "task_reject_on_worker_lost"
            )
            if task.acks_late and requeue:
                logger.warning(
                    "Task %s[%s]: %s; its message goes back to the queue",
                    task.name,
                    request.id,
                    killed.detail,
                )
                return Outcome(states.REJECTED, settle="requeue", reason=killed.detail)
            outcome = Outcome(
                states.FAILURE, exc=WorkerLostError(killed.detail), reason=killed.detail
            )
        await asyncio.to_thread(finish, task, request, outcome, self.hostname)
        return outcome

    # -- limits and terminate -------------------------------------------------------------------
    def _soft_limit(self, child: Child, job: Job, soft: float) -> None:
        if child.job is not job or self._children is None:
            return
        logger.warning(
            "Task %s[%s]: soft time limit (%gs) exceeded", job.task.name, job.request.id, soft
        )
        self._children.signal(child, signal.SIGUSR1)

    def _hard_limit(self, child: Child, job: Job, hard: float) -> None:
        children = self._children
        if child.job is not job or children is None:
            return
        detail = f"hard time limit ({hard:g}s) exceeded"
        logger.error(
            "Task %s[%s]: %s; killing child %d", job.task.name, job.request.id, detail, child.pid
        )
        children.end_job(child, Killed("time_limit", detail))
        children.retire(child, f"it was killed at a task's {detail}")
        children.signal(child, signal.SIGKILL)

    async def terminate(self, task_id: str) -> bool:
        """Kill the child running ``task_id`` and replace it.

        Children ignore SIGTERM (so that a signal to the process group spares busy children);
        terminating is therefore SIGKILL, after the SIGTERM that a child in the middle of
        starting up may still honour."""
        children = self._children
        if children is None:
            return False
        for child in list(children.children):
            if child.job is not None and child.job.request.id == task_id:
                children.end_job(child, Killed("terminated", "terminated"))
                children.retire(child, f"its task {task_id} was terminated")
                children.signal(child, signal.SIGTERM)
                asyncio.get_running_loop().call_later(
                    TERMINATE_GRACE, children.signal, child, signal.SIGKILL
                )
                return True
        if self._overseer is not None:
            for child, running in self._overseer.running(children.active()):
                if running.task_id == task_id:
                    self._kill(child, "terminated", "terminated", signal.SIGTERM)
                    asyncio.get_running_loop().call_later(
                        TERMINATE_GRACE, children.signal, child, signal.SIGKILL
                    )
                    return True
        return False

    # -- children that fetch their own messages ---------------------------------------------------
    @property
    def fetching(self) -> bool:
        """Whether this pool's children fetch their own messages (once :meth:`serve` is
        called): the consumer then fetches nothing itself."""
        return self._board is not None

    def serve(
        self, host: Host, transport: Transport, state: WorkerState, queues: Sequence[str]
    ) -> None:
        """Start the children fetching from ``queues``; ``host`` (the consumer) takes what they
        hand over and records the end of what they ran when they die."""
        assert self._board is not None and self._children is not None
        self._overseer = Overseer(self._board, transport, host, state)
        state.revoked.watchers.append(self._revoked_more)
        self._hand_over(host)
        self.set_queues(queues)
        self._tick = asyncio.get_running_loop().call_later(TICK, self._on_tick)

    def set_queues(self, queues: Sequence[str]) -> None:
        """Fetch from ``queues`` from now on (none: stop fetching)."""
        self._queues = tuple(queues)
        self._tell(Queues(self._queues))

    def _hand_over(self, host: Host) -> None:
        """Tell the children which messages go to the worker now (rate limits, task events),
        when they change: at once for the consumer's changes and after each control command
        (``rate_limit``, ``enable_events``), and on every tick besides."""
        names, everything = host.leave_to_worker()
        if (names, everything) != (self._handed_over, self._everything):
            self._handed_over, self._everything = names, everything
            self._tell(HandOver(names, everything))

    def sync(self) -> None:
        """Bring the worker's state up to date with the board (a control command reads it)."""
        if self._overseer is not None and self._children is not None:
            self._overseer.sync(self._children.active())

    def rules_changed(self) -> None:
        if self._overseer is not None:
            self._hand_over(self._overseer.host)

    def running_fetched(self) -> int:
        if self._overseer is None or self._children is None:
            return 0
        return len(self._overseer.running(list(self._children.children)))

    def _revoked_more(self, keys: list[Any]) -> None:
        self._tell(Revoke(frozenset(keys)))

    def _tell(self, message: Queues | Revoke | HandOver) -> None:
        if self._overseer is not None and self._children is not None:
            self._overseer.tell(list(self._children.children), message)

    def _on_tick(self) -> None:
        overseer, children = self._overseer, self._children
        if overseer is None or children is None:
            return
        busy = True
        try:
            self._hand_over(overseer.host)
            busy = overseer.tick(children.active(), self._kill)
        except Exception:  # never let one bad read stop the watch
            logger.exception("prefork: reading the board failed")
        delay = TICK if busy else IDLE_TICK
        self._tick = asyncio.get_running_loop().call_later(delay, self._on_tick)

    def _kill(self, child: Child, kind: str, detail: str, signum: int = signal.SIGKILL) -> None:
        """Kill ``child`` for the task it runs from the board (its end: ``kind``)."""
        children = self._children
        if children is None:
            return
        child.killed = Killed(kind, detail)  # type: ignore[arg-type]
        children.retire(child, f"it was killed: {detail}")
        children.signal(child, signum)

    # the supervisor's Fetching protocol
    def nudge(self, child: Child) -> None:
        if self._overseer is not None and self._queues:  # else it waits on its pipe, not Redis
            self._overseer.nudge(child)

    def heard(self, child: Child, message: object) -> bool:
        overseer = self._overseer
        if isinstance(message, Handoff):
            delivery = Delivery(message.tag, message.queue, message.payload, message.delivery_count)
            if overseer is not None:
                overseer.host.handed_off(delivery)
            return True
        if isinstance(message, DeadLettered):
            if overseer is not None:
                overseer.host.dead_lettered(message.letters)
            return True
        if isinstance(message, Leaving):
            if self._children is not None:
                self._children.retire(child, message.why)
            return True
        return False

    def busy(self, child: Child) -> bool:
        if self._overseer is None:
            return False
        entry = self._overseer.entry(child)
        return entry is not None and entry.running is not None

    def gone(self, child: Child, killed: Killed) -> None:
        if self._overseer is not None:
            self._overseer.gone(child, killed)
        elif child.slot is not None and self._board is not None:
            self._board.clear(child.slot)

    async def killed_outcome(
        self, task: Task[Any, Any], request: Request, killed: Killed
    ) -> Outcome:
        """The outcome (stored) of a task whose child was killed or lost while running it."""
        return await self._from_killed(task, request, killed)
