"""The consumer: fetch up to the prefetch window, pre-check, hand to the pool, settle.

Flow per delivery: decode headers (undecodable: dead-letter with the reason) -> known task?
(unknown: dead-letter) -> revoked or expired? (REVOKED, ack) -> due? (a message sent with an
eta by a producer that did not delay it on the broker goes back there) -> decode the body
(undecodable or content not accepted: dead-letter) -> wait for a free pool slot -> ack now unless
``acks_late`` -> run in the pool -> settle by outcome.

The consumer never holds more than ``concurrency * prefetch_multiplier`` deliveries and hands the
pool a request only when a slot is free, in arrival order, so an idle slot never waits behind a
busy one. Every unacked delivery's lease is renewed while the worker holds it, so a long
``acks_late`` task is never redelivered to another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celeriac import signals, states
from celeriac.canvas import flow
from celeriac.context import Request
from celeriac.errors import (
    DecodeError,
    NotRegistered,
    TaskRevokedError,
    TransportError,
    WorkerLostError,
)
from celeriac.execution import executor
from celeriac.execution.executor import Outcome
from celeriac.protocol.codec import decode_body
from celeriac.protocol.message import parse_time
from celeriac.results.base import ResultMeta, exception_to_dict
from celeriac.routing import Queue
from celeriac.transports.base import DeadLetter, Delivery, Transport
from celeriac.utils.outage import Outage
from celeriac.worker import task_events
from celeriac.worker.acks import AckBatcher
from celeriac.worker.pools.base import Pool
from celeriac.worker.ratelimit import RateLimiter
from celeriac.worker.request import build_request
from celeriac.worker.settling import settlement
from celeriac.worker.slots import Slots as Slots  # re-exported: its home before
from celeriac.worker.state import WorkerState

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.events.dispatcher import EventDispatcher
    from celeriac.task import Task

logger = logging.getLogger("celeriac.worker")

FETCH_TIMEOUT = 1.0
#: How often a warm shutdown looks again whether the pool's fetching children are done.
FETCHED_POLL = 0.05
#: The task option rate limits declare: ``rate_limit="10/s"`` (per task type, per worker).
TASK_OPTIONS: dict[str, Any] = {"rate_limit": None}
#: Internal errors a message may meet in this worker before it is dead-lettered, the seconds
#: its requeue is delayed per error met, and how many messages' counts are remembered.
INTERNAL_ERROR_LIMIT = 3
INTERNAL_ERROR_BACKOFF = 0.5
INTERNAL_ERROR_MEMORY = 10_000
#: An eta at most this far ahead is waited for in the worker instead of on the broker.
ETA_TOLERANCE = 0.5


class Consumer:
    def __init__(
        self,
        app: Celeriac,
        transport: Transport,
        pool: Pool,
        queues: list[Queue],
        *,
        prefetch_multiplier: int,
        hostname: str,
        state: WorkerState,
    ) -> None:
        self.app = app
        self.transport = transport
        self.pool = pool
        self.queue_names = [q.name for q in queues]
        self.prefetch_multiplier = prefetch_multiplier
        self.hostname = hostname
        self.state = state
        #: The worker this consumer belongs to, as Celery's ``Consumer.controller`` (set by the
        #: worker; ``worker_ready`` receivers reach it as ``sender.controller``).
        self.controller: Any = None
        self.inflight: dict[int, Delivery] = {}
        self.unacked: dict[int, Delivery] = {}
        self.waiting: dict[int, asyncio.Task[None]] = {}
        #: Handed to the pool, not started by a thread or child yet: key -> (task id, handler).
        self.dispatched: dict[int, tuple[str, asyncio.Task[None]]] = {}
        self.handlers: set[asyncio.Task[None]] = set()
        #: Task ids whose run here has not been reported yet, with deliveries of the same id
        #: waiting for that (see :meth:`_after_earlier_run`).
        self._earlier_runs: dict[str, asyncio.Event] = {}
        #: Internal errors met per message (by id) in this worker: see :meth:`_internal_error`.
        self._internal_errors: dict[str, int] = {}
        self.slots = Slots(pool.concurrency * pool.depth)
        self._room = asyncio.Event()
        self._stopping = False
        self._in_get = False
        self._fetcher: asyncio.Task[Any] | None = None
        #: set while no ``get`` is in progress (see :meth:`refetch`)
        self._out_of_get = asyncio.Event()
        self._out_of_get.set()
        self._refetching = False
        self._accept = tuple(app.conf.accept_content)
        #: Checks each message's signature before anything else is read (``security_cert_store``).
        security = app.security
        self.verifier = security.verifier if security is not None else None
        self.rate_limiter = RateLimiter()
        self._rate_held: dict[str, int] = {}
        for name, task in app.tasks.items():
            rate = task.options.get("rate_limit") or app.conf.task_default_rate_limit
            if rate:
                self.rate_limiter.set_rate(name, rate)
        #: One log line per broker outage, whichever operation hit it first.
        self.outage = Outage("broker", logger)
        self.acks = AckBatcher(transport, self.outage)
        self._events: EventDispatcher | None = None
        #: Set when who fetches may change (a pool that fetches: see :meth:`run`).
        self._mode = asyncio.Event()
        #: The pool's processes fetch now (not this consumer).
        self._children_fetch = False
        transport.watch_capacity(self.capacity)
        transport.watch_dead_letters(self._broker_dead_lettered)

    @property
    def events(self) -> EventDispatcher | None:
        """The worker's event dispatcher while its events component runs (``task-*`` events
        are sent through it when task events are on: :mod:`celeriac.worker.task_events`)."""
        return self._events

    @events.setter
    def events(self, dispatcher: EventDispatcher | None) -> None:
        self._events = dispatcher
        self.rules_changed()

    def leave_to_worker(self) -> tuple[frozenset[str], bool]:
        """For a pool that fetches: the task types whose messages its children hand to this
        consumer (those with a rate limit: kept here), and whether all of them go (task events
        are on: sent from here)."""
        events = self.events
        return self.rate_limiter.limited(), events is not None and events.sends(task_events.TASK)

    @property
    def window(self) -> int:
        """How many deliveries this worker may hold: the pool's size times the prefetch
        multiplier (what a pool holds in its own queue counts too)."""
        return max(1, self.pool.concurrency * self.prefetch_multiplier, self.slots.size)

    def capacity(self) -> int:
        """How many deliveries this worker may hold unsettled now: the room in its window (none
        once it stops fetching) plus those it holds and has not acked. A task acked early
        fills the window while it runs but no longer counts here: a broker that pushes ahead of
        ``get`` (``Transport.watch_capacity``) must then push one fewer."""
        room = 0 if self._stopping else max(0, self.window - len(self.inflight))
        return room + len(self.unacked)

    async def resize(self, concurrency: int) -> None:
        """Follow the pool to a new size (the autoscaler calls this after ``pool.resize``)."""
        await self.slots.resize(concurrency * self.pool.depth)
        self._room.set()

    # -- fetching ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Fetch until :meth:`stop_fetching`; each delivery gets its own handler task.

        With a pool whose processes fetch, they do, and this takes what they hand over; except
        while task events are on: those are sent from here, so this fetches, as with any other
        pool, and the processes fetch nothing (a switch within a fetch's timeout either way)."""
        if not self.pool.fetching:
            await self._fetch()
            return
        self.pool.serve(self, self.transport, self.state, ())
        while not self._stopping:
            if self._task_events_on():
                await self._fetch(until=lambda: not self._task_events_on())
                continue
            self._children_fetch = True
            self.pool.set_queues(self.queue_names)
            self._mode.clear()
            await self._mode.wait()  # rules_changed() or stop_fetching()
            self._children_fetch = False
            self.pool.set_queues(())

    def _task_events_on(self) -> bool:
        events = self.events
        return events is not None and events.sends(task_events.TASK)

    def rules_changed(self) -> None:
        """Task events went on or off, or a rate limit changed: the pool's processes that
        fetch are told, and :meth:`run` looks again at who fetches."""
        self._mode.set()
        self.pool.rules_changed()

    async def _fetch(self, until: Callable[[], bool] | None = None) -> None:
        """This consumer's own fetch, until it stops (or ``until()`` says so)."""
        backoff = 0.1
        self._fetcher = asyncio.current_task()
        while not self._stopping and not (until is not None and until()):
            room = self.window - len(self.inflight)
            # Refill in batches: while work is in hand, wait until half the window is free, so
            # that one round trip to the broker brings many messages, not one each time.
            if room <= 0 or (self.inflight and room < self.window // 2):
                self._room.clear()
                await self._room.wait()
                continue
            try:
                self._in_get = True
                self._out_of_get.clear()
                try:
                    batch = await self.transport.get(self.queue_names, room, FETCH_TIMEOUT)
                finally:
                    self._in_get = False
                    self._out_of_get.set()
            except asyncio.CancelledError:
                if self.stopping:
                    return  # stop_fetching() interrupted the wait; get() is cancel-safe
                if self._refetching:  # refetch() interrupted it: fetch again, from the new list
                    self._refetching = False
                    fetcher = asyncio.current_task()
                    if fetcher is None or fetcher.uncancel() == 0:
                        continue
                raise
            except TransportError as exc:
                self.outage.failed(exc, "fetching")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            self.outage.ok()
            backoff = 0.1
            for delivery in batch:
                self.handed_off(delivery)

    def handed_off(self, delivery: Delivery) -> None:
        """Take ``delivery`` in hand: a handler of its own runs it (fetched here, or handed
        over by a pool child that fetched it)."""
        self.inflight[id(delivery)] = delivery
        self.unacked[id(delivery)] = delivery
        handler = asyncio.create_task(self._handle(delivery))
        self.waiting[id(delivery)] = handler
        self.handlers.add(handler)
        handler.add_done_callback(self.handlers.discard)

    def _made_room(self) -> None:
        """Wake the fetcher if it would fetch now (the test of :meth:`run`): woken at every
        task's end, it went back to waiting three times in four, an event-loop turn each."""
        room = self.window - len(self.inflight)
        if room > 0 and (not self.inflight or room >= self.window // 2):
            self._room.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def refetch(self) -> None:
        """Start the fetch over with :attr:`queue_names` as they are now (``add_consumer`` and
        ``cancel_consumer`` changed them): a ``get`` waiting now is interrupted, which the
        transport contract makes safe (what it took goes back), and this returns once it has
        ended, so no fetch that names a queue dropped from the list is still running."""
        if self._children_fetch:
            if not self._stopping:
                self.pool.set_queues(self.queue_names)
            return
        fetcher = self._fetcher
        if self._stopping or not self._in_get or fetcher is None or fetcher.done():
            return
        self._refetching = True
        fetcher.cancel()
        try:
            await self._out_of_get.wait()
        finally:
            self._refetching = False  # also when the get ended by itself before the cancel

    def stop_fetching(self) -> None:
        """Stop fetching now: a ``get`` waiting for messages is interrupted (the transport
        contract makes that safe: nothing it leased is lost)."""
        if self._stopping:
            return
        self._stopping = True
        self._room.set()
        self._mode.set()
        if self.pool.fetching:
            self.pool.set_queues(())
        if self._in_get and self._fetcher is not None and not self._fetcher.done():
            self._fetcher.cancel()

    # -- one delivery -----------------------------------------------------------------------------
    async def _handle(self, delivery: Delivery) -> None:
        key = id(delivery)
        try:
            prepared = await self._prepare(delivery)
            if prepared is None:
                return
            task, request = prepared
            if request.retries and self.pool.fetching:
                self.pool.sync()  # a run of this id that a child fetched, in state.active
            if request.id in self.state.active:
                await self._after_earlier_run(request.id)
            signals.task_received.send(self, request=request)
            if self.events is not None:
                task_events.received(self.events, request)
            if not await self._wait_rate(delivery, task):
                return
            await self.slots.acquire()
            try:
                self.waiting.pop(key, None)
                if self._stopping:
                    # unless requeue_waiting already gave it back (it took it from unacked)
                    if self.unacked.pop(key, None) is not None:
                        await self.transport.requeue([delivery])
                    return
                why = self._not_runnable(request)
                if why is not None:  # revoked or expired while it waited for a slot
                    await self._revoke(delivery, task, request.id, why, request)
                    return
                await self._execute(delivery, task, request)
            finally:
                await self.slots.release()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._internal_error(delivery, exc)
        finally:
            self.waiting.pop(key, None)
            self.unacked.pop(key, None)
            self.inflight.pop(key, None)
            self._made_room()

    async def _internal_error(self, delivery: Delivery, exc: Exception) -> None:
        """A message met an error of the worker's own (a bug here, in a custom pool or
        request class): sent back, a little later each time, and dead-lettered with the error
        as its reason once it has met :data:`INTERNAL_ERROR_LIMIT` of them in this worker,
        so that it neither loops for ever (a requeue does not count toward
        ``max_deliveries``) nor is lost."""
        key = _message_key(delivery)
        count = self._internal_errors.pop(key, 0) + 1
        try:
            if count >= INTERNAL_ERROR_LIMIT:
                logger.error("internal error while handling a message", exc_info=exc)
                await self._dead_letter(
                    delivery, f"internal error {count} times while handling it: {exc!r}"
                )
                return
            logger.error(
                "internal error while handling a message (%d of %d); requeueing it",
                count,
                INTERNAL_ERROR_LIMIT,
                exc_info=exc,
            )
            self._internal_errors[key] = count
            while len(self._internal_errors) > INTERNAL_ERROR_MEMORY:  # oldest first
                del self._internal_errors[next(iter(self._internal_errors))]
            await self.transport.requeue([delivery], delay=INTERNAL_ERROR_BACKOFF * count)
            self.unacked.pop(id(delivery), None)
        except Exception as error:  # its lease runs out and it comes back: not lost
            logger.error("could not settle a message after an internal error: %r", error)

    async def _execute(self, delivery: Delivery, task: Task[Any, Any], request: Request) -> None:
        early = not task.acks_late

        key = id(delivery)

        def started() -> None:
            # the pool took it (it may have waited in the pool's queue): only now is an early
            # task acked, so a shutdown still returns what had not started
            self.dispatched.pop(key, None)
            self.state.active[request.id] = request
            if early and self.unacked.pop(key, None) is not None:  # not returned meanwhile
                self.acks.ack_soon(delivery)
            if self.events is not None:
                task_events.started(self.events, request.id)

        handler = asyncio.current_task()
        assert handler is not None
        self.dispatched[key] = (request.id, handler)
        try:
            outcome = await self.pool.run(task, request, started)
        finally:
            self.dispatched.pop(key, None)
            self.state.active.pop(request.id, None)
            earlier = self._earlier_runs.pop(request.id, None)
            if earlier is not None:  # resumes after this run's outcome is reported below
                earlier.set()
        if early and self.unacked.pop(key, None) is not None:
            self.acks.ack_soon(delivery)  # settled without starting (it could not be handed over)
        self._count(task, request, outcome)
        op, reason = settlement(task, request.id, outcome, early=early)
        if early:
            return
        try:
            if op == "requeue":
                await self._requeue([delivery])
            elif op == "reject":
                await self.transport.reject([delivery], reason)
            else:
                await self.acks.ack(delivery)
        except TransportError as exc:
            self.outage.failed(exc, f"settling {delivery.tag} (its lease will expire)")

    def _count(self, task: Task[Any, Any], request: Request, outcome: Outcome) -> None:
        """A run's end in the worker's counts, signals and events."""
        self.state.processed += 1
        if outcome.state == states.SUCCESS:
            self.state.succeeded += 1
        elif outcome.state == states.FAILURE:
            self.state.failed += 1
        elif outcome.state == states.REVOKED:  # terminated, or revoked while in the pool's queue
            terminated = outcome.reason == "terminated"
            signum = getattr(self.pool, "terminate_signal", None) if terminated else None
            signals.task_revoked.send(
                task, request=request, terminated=terminated, signum=signum, expired=False
            )
        if self.events is not None:
            signum = getattr(self.pool, "terminate_signal", None)
            task_events.finished(self.events, request.id, outcome, signum)

    async def _requeue(self, deliveries: list[Delivery]) -> None:
        await self.transport.requeue(deliveries)
        for delivery in deliveries:
            self.unacked.pop(id(delivery), None)

    async def _dead_letter(
        self, delivery: Delivery, reason: str, exc: DecodeError | None = None
    ) -> None:
        """Dead-letter a message no task can run; ``exc``: why it cannot be read (sent as
        ``task_rejected``; an unknown task sends ``task_unknown`` instead, as in Celery)."""
        logger.error("dead-lettering a message from %r: %s", delivery.queue, reason)
        if exc is not None:
            signals.task_rejected.send(self, message=delivery, exc=exc)
        await self.transport.reject([delivery], reason)

    async def _prepare(self, delivery: Delivery) -> tuple[Task[Any, Any], Request] | None:
        """The pre-checks; returns ``None`` when the message was settled without running."""
        try:
            message = delivery.decode()
        except DecodeError as exc:
            await self._dead_letter(delivery, f"undecodable message: {exc.reason}", exc)
            return None
        if self.verifier is not None:  # before any header is trusted or the body is read
            try:
                self.verifier.verify(message)
            except DecodeError as exc:
                reason = f"refused {message.task!r} (id {message.id!r}): {exc.reason}"
                await self._dead_letter(delivery, reason, exc)
                return None
        task = self.app.tasks.get(message.task)
        if task is None:
            error = NotRegistered(message.task)
            if self.events is not None:
                task_events.unknown(self.events, message.id, message.task)
            await self._end_workflow(delivery, states.FAILURE, error, None, store=True)
            signals.task_unknown.send(
                self, message=delivery, exc=error, name=message.task, id=message.id
            )
            await self._dead_letter(delivery, f"unknown task {message.task!r} (id {message.id})")
            return None
        try:
            expires, eta = message.expires, message.eta
        except DecodeError as exc:
            await self._dead_letter(delivery, f"bad header: {exc.reason}", exc)
            return None
        now = datetime.now(UTC)
        headers = message.headers
        if self.state.revoked.is_revoked(
            message.id, headers.get("root_id"), headers.get("parent_id")
        ):
            await self._revoke(delivery, task, message.id, "revoked")
            return None
        if expires is not None and expires <= now:
            await self._revoke(delivery, task, message.id, f"expired at {expires.isoformat()}")
            return None
        if eta is not None and (ahead := (eta - now).total_seconds()) > 0:
            if ahead > ETA_TOLERANCE:
                await self.transport.requeue([delivery], delay=ahead)
                return None
            # due in a moment: held here (its lease renewed like any other) rather than sent
            # back and fetched again, but never run before its eta
            await asyncio.sleep(ahead)
        try:
            args, kwargs, embed = decode_body(message, accept=self._accept, codecs=self.app.codecs)
        except DecodeError as exc:
            reason = f"task {message.task}[{message.id}]: {exc.reason}"
            await self._dead_letter(delivery, reason, exc)
            return None
        request = build_request(message, delivery, args, kwargs, embed, self.hostname)
        return task, request

    async def _after_earlier_run(self, task_id: str) -> None:
        """Wait until this worker has reported the run of ``task_id`` it is still finishing.

        A task that retries with no countdown sends its next message before its own run has
        ended; without this wait the next run could start, and even end, before the first is
        reported, so its ``task-retried`` event (and the RETRY stored by the first run's pool
        slot) would come after the next run's events and result.
        """
        earlier = self._earlier_runs.get(task_id)
        if earlier is None:
            earlier = self._earlier_runs[task_id] = asyncio.Event()
        await earlier.wait()

    def set_rate_limit(self, name: str, rate: str | None) -> None:
        """Change a task type's rate limit now (the ``rate_limit`` control command)."""
        self.rate_limiter.set_rate(name, rate)
        self.rules_changed()

    async def _wait_rate(self, delivery: Delivery, task: Task[Any, Any]) -> bool:
        """Delay only this task type to its rate; False if the message went back to the broker.

        A message waiting for its token leaves the prefetch window, so other task types keep
        flowing. At most a window's worth wait per type in memory; past that the message goes
        back to the broker, delayed by about the time the ones held here need to drain.
        """
        rate = self.rate_limiter.rate(task.name)
        if rate is None:
            return True
        held = self._rate_held.get(task.name, 0)
        key = id(delivery)
        if held >= self.window:
            await self.transport.requeue([delivery], delay=held / rate)
            self.unacked.pop(key, None)
            return False
        delay = self.rate_limiter.reserve(task.name)
        if delay <= 0:
            return True
        self._rate_held[task.name] = held + 1
        self.inflight.pop(key, None)
        self._made_room()
        try:
            await asyncio.sleep(delay)
        finally:
            self._rate_held[task.name] -= 1
            self.inflight[key] = delivery
        return True

    def _not_runnable(self, request: Request) -> str | None:
        """Why a request that passed the pre-checks must not run now, if it must not."""
        if self.state.revoked.is_revoked(request.id, request.root_id, request.parent_id):
            return "revoked"
        if request.expires:
            expires = parse_time(request.expires, "expires")
            if expires is not None and expires <= datetime.now(UTC):
                return f"expired at {expires.isoformat()}"
        return None

    async def _revoke(
        self,
        delivery: Delivery,
        task: Task[Any, Any],
        task_id: str,
        why: str,
        request: Request | None = None,
    ) -> None:
        logger.info("Task %s[%s] not run: %s", task.name, task_id, why)
        if self.events is not None:
            task_events.revoked(self.events, task_id, expired=why != "revoked")
        if request is None and signals.task_revoked.has_receivers(task):
            request = self._request_of(delivery)
        signals.task_revoked.send(
            task, request=request, terminated=False, signum=None, expired=why != "revoked"
        )
        backend = self.app.backend
        if backend is not None:
            meta = ResultMeta(
                task_id,
                states.REVOKED,
                exception_to_dict(TaskRevokedError(why)),
                date_done=time.time(),
                reply_to=_reply_to(delivery, request),  # an rpc:// caller waits for it
            )
            try:
                await backend.astore(meta)
            except Exception as exc:
                logger.error("could not store REVOKED for %s: %s", task_id, exc)
        await self._end_workflow(delivery, states.REVOKED, TaskRevokedError(why), request)
        await self.acks.ack(delivery)

    async def _end_workflow(
        self,
        delivery: Delivery,
        state: str,
        exc: BaseException,
        request: Request | None,
        *,
        store: bool = False,
    ) -> None:
        """A message settled without running still moves its workflow on: the rest of its chain
        fails and its chord counts it (see :mod:`celeriac.canvas.flow`), else they would wait
        for ever. ``store``: record ``state`` for the task first (nothing else did)."""
        if request is None:
            request = self._request_of(delivery)
        if request is None or not (request.chain or request.chord):
            return  # nothing to read the workflow from, or no workflow
        backend = self.app.backend
        if store and backend is not None:
            meta = ResultMeta(
                request.id,
                state,
                exception_to_dict(exc),
                group_id=request.group,
                reply_to=request.reply_to,
            )
            with contextlib.suppress(Exception):  # the join below reads it; logged by flow
                await backend.astore(meta)
        await asyncio.to_thread(flow.advance, self.app, request, state, None, exc, None)

    # -- tasks a pool child fetched and ran itself ----------------------------------------------
    async def board_lost(self, delivery: Delivery, killed: Any) -> None:
        """A task a pool child fetched and ran ended without it (killed at its hard limit,
        terminated, lost, a cold stop): its end recorded and its message settled as for a
        task handed to the pool (the pool stores the outcome: ``killed_outcome``)."""
        try:
            request = self._request_of(delivery)
            task = self.app.tasks.get(request.task) if request is not None else None
            if request is None or task is None:  # it was read once: cannot happen
                await self.transport.ack([delivery])
                return
            outcome = await self.pool.killed_outcome(task, request, killed)  # type: ignore[attr-defined]
            self._count(task, request, outcome)
            op, reason = settlement(task, request.id, outcome, early=not task.acks_late)
            if op == "requeue":
                await self.transport.requeue([delivery])
            elif op == "reject":
                await self.transport.reject([delivery], reason)
            else:
                await self.transport.ack([delivery])
        except TransportError as exc:
            self.outage.failed(exc, f"settling {delivery.tag} (its lease will expire)")
        except Exception:
            logger.exception("could not record the end of a task its child did not finish")

    def ran(self, task_id: str) -> None:
        """A run of ``task_id`` that a pool child fetched has ended (its outcome is stored): a
        later delivery of the same id waiting for it (a retry) may go."""
        earlier = self._earlier_runs.pop(task_id, None)
        if earlier is not None:
            earlier.set()

    def dead_lettered(self, letters: Sequence[DeadLetter]) -> None:
        """A pool child's claim dead-lettered these messages."""
        self._broker_dead_lettered(letters)

    def request_of(self, delivery: Delivery) -> Request | None:
        return self._request_of(delivery)

    # -- messages the broker dead-lettered by itself ------------------------------------------
    def _broker_dead_lettered(self, letters: Sequence[DeadLetter]) -> None:
        """The transport dead-lettered ``letters`` while claiming (delivered ``max_deliveries``
        times, never settled: their workers kept dying or losing the broker while holding
        them). Nobody will run them, so their end is recorded here, as a failure."""
        handler = asyncio.get_running_loop().create_task(self._fail_dead_letters(list(letters)))
        self.handlers.add(handler)
        handler.add_done_callback(self.handlers.discard)

    async def _fail_dead_letters(self, letters: list[DeadLetter]) -> None:
        for letter in letters:
            try:
                await self._fail_dead_letter(letter)
            except Exception:
                logger.exception("could not record the failure of a dead-lettered message")

    async def _fail_dead_letter(self, letter: DeadLetter) -> None:
        """Fail the task of a message the broker dead-lettered, as a run that failed with
        :class:`~celeriac.errors.WorkerLostError` would: its result stored (a caller's ``get()``
        raises instead of waiting), ``link_error`` callbacks sent, the rest of its chain failed,
        its chord counting it (the body fails with ``ChordError``), a ``task-failed`` event.

        Nothing is done for a message that cannot be read, that fails its signature check
        (broker access alone must not let anyone fail tasks or complete chords), or whose task
        already has a final state (it ran to its end and only its ack was lost: that outcome
        stands and its workflow has moved on already)."""
        delivery = Delivery(None, letter.queue, letter.payload, letter.delivery_count)
        try:
            message = delivery.decode()
            if self.verifier is not None:
                self.verifier.verify(message)
        except DecodeError as exc:
            logger.warning("a dead-lettered message of %r is not read: %s", letter.queue, exc)
            return
        request = self._request_of(delivery)
        if request is None:
            return
        backend = self.app.backend
        if backend is not None:
            try:
                if (await backend.aget_meta(request.id)).ready:
                    return
            except Exception as error:  # unknown: failing it is what lets its workflow move on
                logger.warning("could not read the state of %s: %s", request.id, error)
        lost = WorkerLostError(
            f"Task {request.task}[{request.id}] was dead-lettered by the broker: {letter.reason}"
        )
        task = self.app.tasks.get(request.task)
        if task is None:  # not a task of this worker: its workflow still moves on
            logger.error("%s", lost)
            await self._end_workflow(delivery, states.FAILURE, lost, request, store=True)
            return
        outcome = Outcome(states.FAILURE, exc=lost, reason=letter.reason)
        await asyncio.to_thread(executor.finish, task, request, outcome, self.hostname)
        if self.events is not None:
            task_events.finished(self.events, request.id, outcome)

    def _request_of(self, delivery: Delivery) -> Request | None:
        """The request of a message settled before its body was read (revoked, expired, an
        unknown task): for ``task_revoked`` receivers and the message's workflow. ``None`` if
        its body cannot be read."""
        try:
            message = delivery.decode()
            args, kwargs, embed = decode_body(message, accept=self._accept, codecs=self.app.codecs)
        except DecodeError:
            return None
        return build_request(message, delivery, args, kwargs, embed, self.hostname)

    # -- leases and shutdown ----------------------------------------------------------------------
    async def requeue_waiting(self) -> int:
        """Warm shutdown: return every fetched-but-not-started delivery to its queue at once:
        those waiting for a slot, and those in the pool's own queue that it gives back.

        The deliveries leave ``unacked`` before the requeue and the requeue is shielded, so a
        cold shutdown that interrupts this neither loses them nor returns them twice.
        """
        handlers = list(self.waiting.items())
        self.waiting.clear()
        queued = dict(self.dispatched)
        withdrawn = self.pool.withdraw({task_id for task_id, _ in queued.values()})
        for key, (task_id, handler) in queued.items():
            if task_id in withdrawn:
                self.dispatched.pop(key, None)
                handlers.append((key, handler))
        deliveries = [self.unacked.pop(k) for k, _ in handlers if k in self.unacked]
        if deliveries:
            await asyncio.shield(self.transport.requeue(deliveries))
        for _, handler in handlers:
            handler.cancel()
        return len(deliveries)

    async def requeue_unacked(self) -> int:
        """Cold shutdown: return every delivery not yet acked, running ones included."""
        deliveries = list(self.unacked.values())
        self.unacked.clear()
        if deliveries:
            await self.transport.requeue(deliveries)
        return len(deliveries)

    async def wait_running(self, timeout: float | None) -> bool:
        """Wait for running handlers, and for the tasks a pool that fetches runs; True if all
        finished within ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        pending = {h for h in self.handlers if not h.done()}
        if pending:
            _, still = await asyncio.wait(pending, timeout=timeout)
            if still:
                return False
        while self.pool.running_fetched():  # read from shared memory: no one to wake us
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.sleep(FETCHED_POLL)
        self.pool.sync()
        return True


def _message_key(delivery: Delivery) -> str:
    """The message's id, or a digest of its bytes when it has none that can be read."""
    try:
        return delivery.decode().id
    except DecodeError:
        return hashlib.sha256(delivery.payload).hexdigest()


def _reply_to(delivery: Delivery, request: Request | None) -> str | None:
    """Where the caller of this message waits for its result (``rpc://``), if anywhere."""
    if request is not None:
        return request.reply_to
    try:
        reply_to = delivery.decode().properties.get("reply_to")
    except DecodeError:
        return None
    return str(reply_to) if reply_to else None
