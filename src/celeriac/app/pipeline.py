"""Sync sends pipelined through the portal loop, for a transport whose publish waits on the
broker's confirm (RabbitMQ): ``.delay()`` returns once its message is handed to the loop, and
its confirm is awaited there, with at most ``window`` messages unconfirmed at a time.

Why: a confirmed publish waits for the broker to write the message down (on RabbitMQ about a
millisecond), so a ``.delay()`` loop that waits for each confirm sends a few hundred a second
where a pipelined one sends thousands, with the same guarantee at the end: every message is
confirmed, or retried, or its failure raised. RabbitMQ's own guidance for publishers is this
(publish, keep a bounded window of outstanding confirms, handle them as they arrive).

How: a send hands what it adds to the loop in a callback, which writes everything gathered
since the last one at once, without awaiting anything, where the transport can
(:meth:`~celeriac.transports.base.Transport.publish_now`: RabbitMQ's channel, when no other
publish holds it), and settles that batch's confirms by callbacks of theirs. So a send never
waits behind the confirms of the one before: with confirms arriving once the consumer acks
(RabbitMQ confirms a persistent message when it is written down or acked, whichever is first),
a sparse sender (``delay().get()``) used to hand each message over while the previous one's
confirm was still due, and it went out only after that (measured, 1,000 round trips: 30% of
them; the slowest 3% of hand-offs took 0.48-0.95 ms where the median took 0.13-0.25).
Messages gathered while the loop is busy go out as one batch, so the loop's cost per message
falls as the rate rises. Where the transport cannot write from a callback,
a task publishes batch after batch, each once the one before is confirmed, and everything sent
meanwhile queues behind it, to keep the order.
A batch that fails is retried on the loop by ``task_publish_retry_policy``; one that still
fails is kept, and the next sync send (or :meth:`flush`, which ``app.close()`` and the
interpreter's exit call) publishes it again and raises if it cannot. Messages leave in the order
sent; a batch retried after a failure may land after later ones. So a send that returned is on
the broker, or is being retried, or its failure is raised to the process later; a process
killed with messages in the window loses them, as it would lose a send in progress.
Inside a worker the window is flushed when a task's body returns (before its result is
stored) and after its follow-ups are sent (before its message is acked): what a task sends is
on the broker before anyone can see it done, as when each send waited for its confirm.
``confirm_window: 0`` turns this off: each send waits for its own confirm.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence

from celeriac.app import retrying
from celeriac.errors import TransportError
from celeriac.transports.base import Outgoing, Transport
from celeriac.utils.portal import Portal

logger = logging.getLogger(__name__)


#: How long the caller that hands over the first send of an idle window waits for the loop to
#: take it (see PublishPipeline._write): a loop busy with other work is not waited for.
HANDOVER_WAIT = 0.005

_live: weakref.WeakSet[PublishPipeline] = weakref.WeakSet()
_exit_hook = threading.Lock()
_hooked = False


def _flush_all_at_exit() -> None:
    """The interpreter is exiting: what is still in a window goes out now (the portal's
    daemon thread runs until after ``atexit``), or is logged as lost with its task ids."""
    for pipeline in list(_live):
        pipeline.close(timeout=10.0)


class PublishPipeline:
    """The window of one producer's sync sends (one per process: a forked child makes its
    own, as the window's messages are its parent's)."""

    def __init__(
        self,
        portal: Portal,
        transport: Transport,
        window: int,
        policy: Callable[[], retrying.Policy],
    ) -> None:
        self.portal = portal
        self.transport = transport
        self.window = window
        self.policy = policy
        self.pid = os.getpid()
        self._cond = threading.Condition()
        self._buffer: list[Outgoing] = []
        self._scheduled = False  # a _write is on its way to the loop
        self._sequential = False  # batches go from tasks, one after another (_next_in_sequence)
        self._handovers = 0  # _write calls run: what a caller that scheduled one waits for
        self._outstanding = 0  # handed over and not yet confirmed or failed
        self._failed: list[tuple[list[Outgoing], BaseException]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        global _hooked
        with _exit_hook:
            if not _hooked:
                atexit.register(_flush_all_at_exit)
                _hooked = True
        _live.add(self)

    @property
    def outstanding(self) -> int:
        """Messages handed over and not yet confirmed (or failed)."""
        with self._cond:
            return self._outstanding

    def send(self, items: Sequence[Outgoing]) -> None:
        """Hand ``items`` to the loop; waits only while the window is full (and, for the first
        send of an idle window, until the loop has taken it: see :meth:`_write`). Raises the
        failure of an earlier send that could not be published (after publishing it again)."""
        if not items:
            return
        self._resend_failed()
        with self._cond:
            while self._outstanding >= self.window:
                self._cond.wait()
            idle = self._outstanding == 0
            self._buffer.extend(items)
            self._outstanding += len(items)
            schedule = not self._scheduled and not self._sequential
            self._scheduled = self._scheduled or schedule
            ticket = self._handovers
        if not schedule:
            return
        self.portal.loop.call_soon_threadsafe(self._write)
        if idle:
            with self._cond:
                self._cond.wait_for(lambda: self._handovers > ticket, HANDOVER_WAIT)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every message handed over is confirmed; raises the failure of any that
        could not be published (they stay, for the next send or flush to try again)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._outstanding:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TransportError(
                        f"{self._outstanding} sent messages still unconfirmed after {timeout} s"
                    )
                self._cond.wait(left)
        self._resend_failed()

    def close(self, timeout: float = 30.0) -> None:
        """Flush; what cannot be published now is logged with its task ids (it is lost)."""
        _live.discard(self)
        if self.pid != os.getpid():
            return  # a forked child: the window is the parent's
        try:
            self.flush(timeout)
        except Exception as exc:
            with self._cond:
                lost = [item for batch, _ in self._failed for item in batch]
                self._failed.clear()
            ids = ", ".join(item.message.id for item in lost[:20])
            logger.error(
                "closing the producer: %d sent message(s) could not be published (%s)%s",
                len(lost) or self._outstanding,
                exc,
                f"; task ids: {ids}" if ids else "",
            )

    # -- on the portal loop ---------------------------------------------------------------------
    def _write(self) -> None:
        """Write what has gathered, from this callback when the transport can
        (:meth:`Transport.publish_now`), its confirms settled by a callback of theirs; or,
        when it cannot, start the sequence that publishes from a task, batch after batch.

        The caller that handed over the first send of an idle window waits until this has
        run: its thread would otherwise go on in Python (into ``.get()``, say) and hold the
        GIL the loop needs to write, when it has nothing better to do than let the message
        leave."""
        with self._cond:
            self._scheduled = False
            # a send may have scheduled this while the _write before it was turning to the
            # sequence: then the sequence takes what gathered, in order
            batch, self._buffer = ([], self._buffer) if self._sequential else (self._buffer, [])
        started: asyncio.Future[list[int]] | None = None
        try:
            started = self.transport.publish_now(batch) if batch else None
        except Exception:  # a transport's bug: publish_batch, from a task, is the way then
            logger.exception("publish_now failed; publishing from a task instead")
        with self._cond:
            if batch and started is None:
                self._buffer[:0] = batch
                self._sequential = True
            self._handovers += 1
            self._cond.notify_all()
        if started is not None:
            started.add_done_callback(functools.partial(self._written, batch))
        elif batch:
            self._next_in_sequence()

    def _written(self, batch: list[Outgoing], started: asyncio.Future[list[int]]) -> None:
        """The confirms of a batch written by :meth:`_write` are in: it leaves the window,
        or, failed, is retried by the policy from a task (as if its first attempt had been
        that task's)."""
        error = asyncio.CancelledError() if started.cancelled() else started.exception()
        if isinstance(error, TransportError):
            self._settle(batch, failed=error)
            return
        if error is not None:
            logger.error("publishing %d message(s) failed: %r", len(batch), error)
        with self._cond:
            self._fail(batch, error)

    def _next_in_sequence(self) -> None:
        """Publish what has gathered from a task, one batch at a time, each once the one
        before is settled (what :meth:`_write` cannot write goes this way, and so does
        everything sent meanwhile, to keep their order), until nothing is left. The sequence
        ends in the same step as its last batch leaves the window, so a ``flush`` that
        returns has it ended: the next send is written from a callback again."""
        with self._cond:
            batch, self._buffer = self._buffer, []
            if not batch:
                self._sequential = False
                return
        self._settle(batch, sequence=True)

    def _settle(
        self,
        batch: list[Outgoing],
        failed: TransportError | None = None,
        sequence: bool = False,
    ) -> None:
        """A task that publishes ``batch``, retried by the publish retry policy as a
        waited-for send would be (``failed``: its first attempt, made elsewhere, failed so);
        its end (also a cancel before it ran) settles the batch in the window and, in a
        ``sequence``, starts the next batch or ends the sequence."""

        async def publish() -> None:
            await retrying.acall(self.policy(), lambda: self.transport.publish_batch(batch), failed)

        def settled(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            error = asyncio.CancelledError() if task.cancelled() else task.exception()
            if error is not None and not isinstance(error, asyncio.CancelledError):
                logger.error("publishing %d message(s) failed: %r", len(batch), error)
            with self._cond:
                self._fail(batch, error)
                if not sequence:
                    return
                if task.cancelled():  # the loop is closing: what waits behind it fails too
                    waiting, self._buffer = self._buffer, []
                    self._fail(waiting, error)
                if not self._buffer:
                    self._sequential = False
                    return
            self._next_in_sequence()

        task = asyncio.get_running_loop().create_task(publish())
        self._tasks.add(task)
        task.add_done_callback(settled)

    def _fail(self, batch: list[Outgoing], error: BaseException | None) -> None:
        """``batch`` leaves the window, confirmed or, with ``error``, failed (to be published
        again by the next send or flush). Call with the condition held."""
        self._outstanding -= len(batch)
        if batch and error is not None:
            self._failed.append((batch, error))
        self._cond.notify_all()

    async def _publish(self, batch: list[Outgoing]) -> None:
        """One batch, retried by the publish retry policy (for :meth:`_resend_failed`)."""
        await retrying.acall(self.policy(), lambda: self.transport.publish_batch(batch))

    # -- back in the caller's thread ------------------------------------------------------------
    def _resend_failed(self) -> None:
        """Publish again, and wait for, what failed earlier; raise if it still fails (what
        failed stays for the next try)."""
        with self._cond:
            if not self._failed:
                return
            failed, self._failed = self._failed, []
        batch = [item for items, _ in failed for item in items]
        try:
            self.portal.call(self._publish(batch))
        except Exception as exc:
            with self._cond:
                self._failed.insert(0, (batch, exc))
            raise TransportError(
                f"{len(batch)} message(s) sent earlier could not be published: {exc}"
            ) from exc
        logger.info("%d message(s) that had failed to publish are now on the broker", len(batch))


__all__ = ["PublishPipeline"]
