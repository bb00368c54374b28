"""The worker's side of prefork children that fetch their own messages (:mod:`.fetching`): it
reads the board (:mod:`.board`) on a timer instead of hearing of each task.

Every :data:`TICK` seconds (:data:`IDLE_TICK` while no child runs a task from the board), and
before a control command reads the worker's state, the overseer reads each child's slot and:

* enforces hard time limits (the child kills itself at none: a child stuck in C code cannot),
  by killing the child; its task's end is then recorded as for a handed-over task killed at
  its limit;
* renews the lease of each task that has run for a third of the lease, as the heartbeat does
  for the messages the consumer holds;
* brings the worker's state up to date: the running tasks in ``state.active`` (what ``inspect
  active``, ``revoke --terminate``, the autoscaler and the fetch watchdog read), the counts of
  tasks processed, succeeded and failed, and the per-name totals of ``stats``.

When a child is gone (killed, lost, or at a cold shutdown) with a task from the board, its last
entry holds the task's message: the host (the consumer) records the task's end and settles the
message as it does for a child that died running a task it handed over.

The overseer also tells the children what changes: the queues (``add_consumer``,
``cancel_consumer``, a stop), the revoked ids, the task types the worker keeps (rate limits,
task events), each time with ``CLIENT UNBLOCK`` so that a child waiting for messages hears it
at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from celeriac.errors import TransportError
from celeriac.transports.base import DeadLetter, Delivery, Transport
from celeriac.worker.pools.board import Board, Entry, Running
from celeriac.worker.pools.fetching import HandOver, Queues, Revoke

if TYPE_CHECKING:
    from celeriac.context import Request
    from celeriac.worker.pools.supervisor import Child, Killed
    from celeriac.worker.state import WorkerState

logger = logging.getLogger("celeriac.worker")

#: Seconds between two reads of the board while a child runs a task from it...
TICK = 0.1
#: ...and while none does (a task that starts then is looked at within this; a worker at rest
#: costs its main process a wake-up a second, not ten).
IDLE_TICK = 1.0


class Host(Protocol):
    """The consumer, as the overseer needs it."""

    def handed_off(self, delivery: Delivery) -> None:
        """A child handed over this message (still leased): handle it as if fetched."""

    async def board_lost(self, delivery: Delivery, killed: Killed) -> None:
        """A task a child ran from the board ended without it: record it, settle it."""

    def dead_lettered(self, letters: Sequence[DeadLetter]) -> None:
        """A child's claim dead-lettered these messages."""

    def ran(self, task_id: str) -> None:
        """A task a child ran from the board has ended (it is no longer running)."""

    def request_of(self, delivery: Delivery) -> Request | None:
        """The request of a message (``None`` if it cannot be read)."""

    def leave_to_worker(self) -> tuple[frozenset[str], bool]:
        """The task names whose messages children hand over, and whether all of them go."""


class Overseer:
    """See the module docstring; one per prefork pool whose children fetch."""

    def __init__(self, board: Board, transport: Transport, host: Host, state: WorkerState) -> None:
        self.board = board
        self.transport = transport
        self.host = host
        self.state = state
        #: task id -> when its lease was last renewed (monotonic)
        self._renewed: dict[str, float] = {}
        #: child pid -> its counts as last added to the worker's
        self._counted: dict[int, tuple[int, int, int, dict[str, int]]] = {}
        #: task ids this overseer put in ``state.active``
        self._active: set[str] = set()
        self._pending: set[asyncio.Task[Any]] = set()

    # -- telling the children ---------------------------------------------------------------------
    def tell(self, children: Iterable[Child], message: Queues | Revoke | HandOver) -> None:
        """Send ``message`` to every child and end the waits of those waiting for messages."""
        for child in children:
            if child.slot is None or child.state == "gone":
                continue
            try:
                child.conn.send(message)
            except OSError:  # it died just now: its sentinel reaps it
                continue
            self.nudge(child)

    def nudge(self, child: Child) -> None:
        """End ``child``'s wait for messages, so that it reads its pipe now."""
        entry = self.entry(child)
        if entry is None or entry.client_id is None:
            return  # not connected yet: it reads its pipe before its first claim
        self._spawn(self._unblock(entry.client_id))  # a no-op unless it waits

    async def _unblock(self, client_id: int) -> None:
        try:
            await self.transport.unblock(client_id)
        except TransportError as exc:  # it wakes by itself within its wait
            logger.debug("could not end a child's wait: %s", exc)

    # -- reading the board ------------------------------------------------------------------------
    def entry(self, child: Child) -> Entry | None:
        if child.slot is None:
            return None
        entry = self.board.read(child.slot)
        if entry is None or entry.pid != child.pid:
            return None  # not written yet by this child
        return entry

    def running(self, children: Iterable[Child]) -> list[tuple[Child, Running]]:
        """The children running a task from the board, with it."""
        found = []
        for child in children:
            entry = self.entry(child)
            if entry is not None and entry.running is not None:
                found.append((child, entry.running))
        return found

    def tick(self, children: Iterable[Child], kill: Any) -> bool:
        """One look at the board (see the module docstring); ``kill(child, kind, detail)``
        kills a child whose task passed its hard limit. False when every child was idle and
        had finished nothing new (only the slots' headers were read): the pool looks less
        often then."""
        live = list(children)
        if not self._active and self._quiet(live):
            return False
        now, clock = time.time(), time.monotonic()
        running = self.running(live)
        renew: list[Delivery] = []
        lease = self.transport.lease_seconds
        for child, task in running:
            if (
                task.hard_limit is not None
                and now - task.started > task.hard_limit
                and self._still_running(child, task)
            ):
                detail = f"hard time limit ({task.hard_limit:g}s) exceeded"
                logger.error(
                    "Task %s[%s]: %s; killing child %d",
                    task.task_name,
                    task.task_id,
                    detail,
                    child.pid,
                )
                kill(child, "time_limit", detail)
                continue
            if not task.acks_late:
                continue  # acked as it started: no lease left to renew
            last = self._renewed.get(task.task_id)
            if now - task.started > lease / 3 and (last is None or clock - last > lease / 3):
                self._renewed[task.task_id] = clock
                renew.append(delivery_of(task))
        if renew:
            self._spawn(self._extend(renew))
        self.sync(live, running)
        return True

    def _quiet(self, children: list[Child]) -> bool:
        """Whether no child runs a task from the board and none finished one since the last
        count (read from the slots' headers alone)."""
        for child in children:
            if child.slot is None:
                continue
            head = self.board.peek(child.slot)
            if head is None or head[0] != child.pid:
                continue
            pid, finished, running = head
            if running or finished != self._counted.get(pid, (0,))[0]:
                return False
        return True

    def _still_running(self, child: Child, task: Running) -> bool:
        """A second read agrees (a kill must not rest on one read of shared memory)."""
        entry = self.entry(child)
        return entry is not None and entry.running == task

    async def _extend(self, deliveries: list[Delivery]) -> None:
        try:
            await self.transport.extend(deliveries)
        except TransportError as exc:
            logger.warning("could not renew %d leases: %s", len(deliveries), exc)

    def sync(
        self, children: Iterable[Child], running: list[tuple[Child, Running]] | None = None
    ) -> None:
        """Bring the worker's state up to date with the board."""
        live = list(children)
        if running is None:
            running = self.running(live)
        now_running = {task.task_id: task for _, task in running}
        active = self.state.active
        for task_id in self._active - now_running.keys():
            active.pop(task_id, None)
            self._renewed.pop(task_id, None)
            self.host.ran(task_id)
        for task_id, task in now_running.items():
            if task_id in active:
                continue
            request = self.host.request_of(delivery_of(task))
            if request is not None:
                dict.__setitem__(active, task_id, request)  # counted from the board's totals
                active.started[task_id] = task.started
        self._active = set(now_running) & set(active)
        for child in live:
            entry = self.entry(child)
            if entry is not None:
                self.count(entry)

    def count(self, entry: Entry) -> None:
        """Add what the child did since its last count to the worker's counts."""
        before = self._counted.get(entry.pid, (0, 0, 0, {}))
        state = self.state
        state.processed += entry.finished - before[0]
        state.succeeded += entry.succeeded - before[1]
        state.failed += entry.failed - before[2]
        totals = entry.totals
        if totals != before[3]:
            state.active.total.update(Counter(totals) - Counter(before[3]))
        self._counted[entry.pid] = (entry.finished, entry.succeeded, entry.failed, dict(totals))

    def gone(self, child: Child, killed: Killed) -> None:
        """``child`` was reaped: count its last tasks, free its slot, and have the host end the
        task it ran from the board, if any (its slot is read now, before a new child takes it)."""
        entry = self.entry(child)
        held = self.board.held(child.slot) if child.slot is not None and entry else []
        if child.slot is not None:
            self.board.clear(child.slot)
        if entry is None:
            return
        if held:
            self._spawn(self._give_back(child.pid, held))
        self.count(entry)
        self._counted.pop(entry.pid, None)
        task = entry.running
        if task is None:
            return
        self.state.active.pop(task.task_id, None)
        self._active.discard(task.task_id)
        self._renewed.pop(task.task_id, None)
        self._spawn(self._lost(task, killed))

    async def _lost(self, task: Running, killed: Killed) -> None:
        try:
            await self.host.board_lost(delivery_of(task), killed)
        finally:
            self.host.ran(task.task_id)

    async def _give_back(self, pid: int, held: list[tuple[str, Any]]) -> None:
        """What a dead child held (claimed, never run) goes back to its queues now, not when
        its lease ends; a message no longer leased to it (its lease ended meanwhile) is only
        warned of by the transport."""
        deliveries = [Delivery(tag, queue, b"") for queue, tag in held]
        logger.info("child %d died holding %d messages: giving them back", pid, len(held))
        try:
            await self.transport.requeue(deliveries)
        except TransportError as exc:  # their leases run out and they come back: not lost
            logger.warning("could not give back %d messages child %d held: %s", len(held), pid, exc)

    # -- background calls -------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def settled(self) -> None:
        """Wait for the calls still under way (the pool stops)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def delivery_of(task: Running) -> Delivery:
    """The delivery a board entry stands for, as the transport settles it."""
    return Delivery(task.tag, task.queue, task.payload, task.delivery_count)
