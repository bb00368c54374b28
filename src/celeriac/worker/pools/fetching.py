"""A prefork child that fetches its own messages (``worker_prefork_fetch``): it claims a
message from the broker (two when the queue is deep and its tasks short), runs it, and acks
it (as it starts, written ahead of its reply, unless the task is ``acks_late``: then on its
next claim's write), while the worker supervises through the board (:mod:`.board`) instead
of handing each task over a pipe.

Why: on the drain benchmark a ``-c 2`` prefork worker spent 347 us of CPU per no-op task (57
of them the task's own ``INCR``), half of it in the main process: a claim and a settle through
its event loop, a pickled request down a pipe, a result up another, a wake-up at each end.
Two processes that claimed for themselves on a blocking socket spent 180 (``bench/floor.py``,
workload (e)). Dispatch stays fair: a child claims only when it has nothing to run, and the
second message of a pair, held while the first runs, goes back to the head of its queue if
that run lasts (:mod:`.holding`), so no message waits long behind a busy child while another
idles.

**What a child runs itself, and what it hands over.** The worker keeps what needs the whole
worker's view: a message that cannot be read or verified, an unknown task, a revoked or
expired one, one due later (an eta), one whose task type has a rate limit, a retry (the
worker orders it after the run that sent it), one too large for the board. Such a message goes
to the worker over the pipe (:class:`Handoff`), still leased, and the worker handles it as if
it had fetched it (it then comes back to some child as a ``Run``). The rest, nearly all, the
child runs: it writes the task and its message on its board slot, runs it with the executor as
a handed-over task runs, and settles as the consumer would (:func:`~.settling.settlement`).

**Limits, revokes, stop.** A soft time limit is the child's own ``setitimer`` (SIGALRM, handled
as the worker's SIGUSR1 is); the hard limit, lease renewal and ``terminate`` are the worker's,
read from the board on its timer. Revokes, queue changes and rate-limited task types come over
the pipe, read between tasks; so do ``Run`` and ``Stop``: the worker ends the child's wait for
messages with ``CLIENT UNBLOCK`` so that it reads them at once. A child that stops gives back
what its last claim took and sends the acks it carried.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from celeriac import signals, states
from celeriac.errors import DecodeError, TransportError
from celeriac.protocol.codec import decode_body
from celeriac.transports.base import DeadLetter, Delivery, Fetcher
from celeriac.worker.pools import holding
from celeriac.worker.pools.base import PoolOptions, effective_time_limits
from celeriac.worker.pools.board import Running, SlotWriter
from celeriac.worker.pools.holding import Holder
from celeriac.worker.request import build_request
from celeriac.worker.settling import settlement

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.execution.executor import Outcome
    from celeriac.task import Task

logger = logging.getLogger("celeriac.worker")

#: How long one wait for messages lasts before the child looks at its pipe anyway (the worker
#: ends a wait when it writes to the child; this bounds the race where it wrote just before).
IDLE_WAIT = 1.0
#: A child claims several messages at once only when its last claim left more ready and its
#: last task ran for less than this (seconds): a task that lasts gains nothing from a batch,
#: and the rest of it would only be held and given back (:mod:`.holding`).
PAIR_UNDER = 0.01
#: The most messages one claim takes (the first runs, the rest are held). A drain of no-op
#: tasks gained up to 8 and about levelled off past it (the holding module has the figures).
CLAIM_MOST = 16

#: Back-off while the broker cannot be reached, doubling up to the maximum.
OUTAGE_DELAY = 0.1
OUTAGE_DELAY_MAX = 5.0


def claim_size(ready_left: bool, last_run: float) -> int:
    """How many messages the next claim takes: one, unless the last claim left more ready and
    the last task ran under :data:`PAIR_UNDER`; then as many as keep the wait of the last one
    held behind tasks like the last to about half the hold limit (:data:`.holding.HOLD_LIMIT`,
    read at each claim): two for a task of 9 ms, four for 3 ms, :data:`CLAIM_MOST` for 0.66 ms
    or less; so a batch is seldom given back."""
    if not ready_left or last_run >= PAIR_UNDER:
        return 1
    if last_run <= 0:
        return CLAIM_MOST
    return min(CLAIM_MOST, 1 + int(holding.HOLD_LIMIT / (2 * last_run)))


class FetchPlan(NamedTuple):
    """What a fetching child is started with (in its ``ChildConfig``)."""

    #: The board's memory (a :class:`~.board.Shared` in the parent, its descriptor here).
    board: Any
    #: This child's slot on the board.
    slot: int
    queues: tuple[str, ...]
    #: Task names whose messages go to the worker (their rate limits are kept there).
    handed_over: frozenset[str]
    #: Revoked ids, and ``(by, id)`` for revoked workflows (``root_id``/``parent_id``).
    revoked: frozenset[Any]
    #: Worker-wide time limits (``--time-limit``, ``--soft-time-limit``).
    time_limit: float | None
    soft_time_limit: float | None
    #: Every message goes to the worker (it sends task events).
    everything: bool = False


class Handoff(NamedTuple):
    """child -> worker: a message for the worker to handle (still leased)."""

    queue: str
    tag: Any
    payload: bytes
    delivery_count: int
    why: str


class DeadLettered(NamedTuple):
    """child -> worker: messages its claim dead-lettered (past ``max_deliveries``)."""

    letters: list[DeadLetter]


class Leaving(NamedTuple):
    """child -> worker: it leaves after its last task (``max_tasks_per_child`` and such)."""

    why: str


class Revoke(NamedTuple):
    """worker -> child: more revoked ids (as in :attr:`FetchPlan.revoked`)."""

    keys: frozenset[Any]


class Queues(NamedTuple):
    """worker -> child: the queues to fetch from now."""

    names: tuple[str, ...]


class HandOver(NamedTuple):
    """worker -> child: the task names whose messages go to the worker now (``everything``:
    all of them, while the worker sends task events)."""

    names: frozenset[str]
    everything: bool = False


class Fetching:
    """The child's side (see the module docstring); :meth:`step` is one turn of its loop."""

    def __init__(
        self,
        app: Celeriac,
        plan: FetchPlan,
        fetcher: Fetcher,
        hostname: str,
        send: Any,
        spare: Callable[[], Fetcher | None] | None = None,
    ) -> None:
        self.app = app
        self.plan = plan
        self.fetcher = fetcher
        #: Makes the holder's own connection (the fetcher is the main thread's alone).
        self._spare = spare
        self._returner: Fetcher | None = None
        self.hostname = hostname
        self.send = send  # the pipe's send: Handoff, DeadLettered, Leaving, Done
        self.queues = list(plan.queues)
        self.handed_over = set(plan.handed_over)
        self.everything = plan.everything
        self.revoked: set[Any] = set(plan.revoked)
        self.writer = SlotWriter(plan.board, plan.slot)
        self.finished = self.succeeded = self.failed = 0
        self.totals: dict[str, int] = {}
        self.acks: list[Delivery] = []  # settled, sent with the next claim
        self._accept = tuple(app.conf.accept_content)
        security = app.security
        self._verifier = security.verifier if security is not None else None
        self._backoff = OUTAGE_DELAY
        self._pid = os.getpid()
        self._written_id: int | None = None
        self._limits = PoolOptions(time_limit=plan.time_limit, soft_time_limit=plan.soft_time_limit)
        #: Seconds the last task run here took (a short one lets the next claim take two).
        self.last_run = 0.0
        #: The second message of a claim, held while the first runs (:mod:`.holding`).
        self.holder = Holder(self._release, board=self.writer)

    # -- the worker's word ------------------------------------------------------------------------
    def heard(self, message: object) -> bool:
        """Apply a message of the fetching kind from the worker; False if it is not one."""
        if isinstance(message, Revoke):
            self.revoked |= message.keys
        elif isinstance(message, Queues):
            self.queues = list(message.names)
        elif isinstance(message, HandOver):
            self.handed_over = set(message.names)
            self.everything = message.everything
        else:
            return False
        return True

    def publish(self, running: Running | None = None) -> bool:
        """Write this child's entry on the board; False if ``running`` does not fit."""
        counts = (self.finished, self.succeeded, self.failed)
        client_id = self._written_id = self.fetcher.client_id
        if running is None:
            self.writer.idle(self._pid, counts, client_id)
            return True
        return self.writer.started(self._pid, counts, client_id, running, self.totals)

    # -- fetching ---------------------------------------------------------------------------------
    def fetch(self, wait: float) -> list[Delivery]:
        """Claim one message, or up to :data:`CLAIM_MOST` when the queues are deep and tasks
        short (see :data:`PAIR_UNDER`), sending the acks waiting; waiting up to ``wait``; ``[]``
        when the wait was ended from outside or the broker cannot be reached (after a
        back-off)."""
        count = claim_size(self.fetcher.ready_left, self.last_run)
        try:
            deliveries = self.fetcher.fetch(self.queues, count, wait, self.acks)
        except TransportError as exc:
            logger.warning("fetching: %s; trying again in %.1fs", exc, self._backoff)
            time.sleep(self._backoff)  # the acks stay: sent again with the next claim
            self._backoff = min(self._backoff * 2, OUTAGE_DELAY_MAX)
            return []
        self._backoff = OUTAGE_DELAY
        self.acks = []
        if self.fetcher.client_id != self._written_id:  # a new connection: the worker's
            self.publish()  # CLIENT UNBLOCK must name it
        return deliveries

    def give_back(self, deliveries: list[Delivery]) -> None:
        """Put what was claimed and will not run here back in its place in its queue (the
        child stops, or fetches elsewhere now)."""
        if not deliveries:
            return
        try:
            self.fetcher.give_back(deliveries)
            self.fetcher.ack(self.acks)
            self.acks = []
        except TransportError as exc:  # their leases run out and they come back: not lost
            logger.warning("could not give back %d messages: %s", len(deliveries), exc)

    def give_back_held(self) -> None:
        """Give back the messages held, if any (the child retires or fetches from nothing)."""
        self.give_back(self.holder.take_all())

    def close(self) -> None:
        """Give back what is still held, send the acks waiting, disconnect (the child
        leaves)."""
        self.give_back(self.holder.close())
        self.flush()
        self.fetcher.close()
        if self._returner is not None:
            self._returner.close()

    def flush(self) -> None:
        """Send the acks waiting (the child leaves)."""
        if self.acks:
            try:
                self.fetcher.ack(self.acks)
            except TransportError as exc:  # their leases run out: they run again elsewhere
                logger.warning("could not ack %d messages: %s", len(self.acks), exc)
            self.acks = []

    # -- one message ------------------------------------------------------------------------------
    def run(self, delivery: Delivery, slot: Any) -> None:
        """Run ``delivery`` here, or hand it to the worker (see the module docstring)."""
        prepared = self._prepare(delivery)
        if isinstance(prepared, str):
            self._hand_over(delivery, prepared)
            return
        task, request, hard, soft = prepared
        late = bool(task.acks_late)
        running = Running(
            request.id,
            task.name,
            delivery.queue,
            delivery.tag,
            delivery.delivery_count,
            delivery.payload,
            time.time(),
            hard,
            late,
        )
        self.totals[task.name] = self.totals.get(task.name, 0) + 1
        began = time.monotonic()
        if not self.publish(running):
            self.totals[task.name] -= 1
            self._hand_over(delivery, "too large for the board")
            return
        if not late:  # acked as it starts, as the consumer acks it: at most once
            self.fetcher.ack_ahead([delivery])
        signals.task_received.send(None, request=request)
        outcome = self._execute(task, request, slot, soft)
        self.finished += 1
        if outcome.state == states.SUCCESS:
            self.succeeded += 1
        elif outcome.state == states.FAILURE:
            self.failed += 1
        self._settle(delivery, task, request.id, outcome, late)
        self.publish()
        self.last_run = time.monotonic() - began

    def _prepare(
        self, delivery: Delivery
    ) -> tuple[Task[Any, Any], Any, float | None, float | None] | str:
        """The task, message, request and ``(hard, soft)`` limits; or why the worker must
        handle this message."""
        try:
            message = delivery.decode()
            if self._verifier is not None:
                self._verifier.verify(message)
            expires, eta = message.expires, message.eta
        except DecodeError as exc:
            return f"unreadable: {exc.reason}"
        if self.everything:
            return "the worker sends task events"
        task = self.app.tasks.get(message.task)
        if task is None:
            return "unknown task"
        if task.name in self.handed_over:
            return "rate limited"
        headers = message.headers
        if headers.get("retries"):
            return "a retry"
        if self.revoked and self._revoked(message.id, headers):
            return "revoked"
        if expires is not None or eta is not None:
            now = datetime.now(UTC)
            if expires is not None and expires <= now:
                return "expired"
            if eta is not None and eta > now:
                return "due later"
        try:
            args, kwargs, embed = decode_body(message, accept=self._accept, codecs=self.app.codecs)
        except DecodeError as exc:
            return f"unreadable body: {exc.reason}"
        request = build_request(message, delivery, args, kwargs, embed, self.hostname)
        hard, soft = effective_time_limits(task, request, self._limits)
        if soft is not None and hard is not None and soft >= hard:
            soft = None  # it could never fire first
        return task, request, hard, soft

    def _revoked(self, task_id: str, headers: Mapping[str, Any]) -> bool:
        revoked = self.revoked
        root = headers.get("root_id") or task_id
        parent = headers.get("parent_id")
        return (
            task_id in revoked
            or ("root_id", root) in revoked
            or (parent is not None and ("parent_id", parent) in revoked)
        )

    def _execute(
        self, task: Task[Any, Any], request: Any, slot: Any, soft: float | None
    ) -> Outcome:
        from celeriac.worker.pools.child import execute_here  # child imports this module

        if soft:
            signal.setitimer(signal.ITIMER_REAL, soft)
        try:
            return execute_here(task, request, slot, soft, self.hostname)
        finally:
            if soft:
                signal.setitimer(signal.ITIMER_REAL, 0)

    def _settle(
        self, delivery: Delivery, task: Task[Any, Any], task_id: str, outcome: Outcome, late: bool
    ) -> None:
        op, argument = settlement(task, task_id, outcome, early=not late)
        if not late:
            return  # acked as it started
        if op == "ack":
            self.acks.append(delivery)
            return
        try:
            if op == "requeue":
                self.fetcher.requeue([delivery])
            else:
                self.fetcher.reject([delivery], str(argument))
        except TransportError as exc:
            logger.warning("settling %s: %s (its lease will expire)", delivery.tag, exc)

    def _release(self, deliveries: list[Delivery]) -> None:
        """The holder's (on its thread): held messages waited too long behind the task
        running here, so they go back to their places in their queues (the head, as a rule),
        where the first child free claims them, on a connection of the holder's own."""
        returner = self._returner
        if returner is None:
            returner = self._returner = self._spare() if self._spare is not None else None
        if returner is None:  # no second connection to be had: the worker takes them
            for delivery in deliveries:
                self._hand_over(delivery, "held behind a task that lasts")
            return
        try:
            returner.give_back(deliveries)
        except TransportError as exc:  # their leases run out and they come back: not lost
            logger.warning("could not give back %d held messages: %s", len(deliveries), exc)

    def _hand_over(self, delivery: Delivery, why: str) -> None:
        self.send(
            Handoff(delivery.queue, delivery.tag, delivery.payload, delivery.delivery_count, why)
        )

    def dead_lettered(self, letters: Any) -> None:
        """The transport's dead-letter watcher: the worker records their failure."""
        self.send(DeadLettered(list(letters)))
