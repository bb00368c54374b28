"""Sync sends pipelined through the portal loop, for a transport whose publish waits on the
broker's confirm (RabbitMQ): ``.delay()`` returns once its message is handed to the loop, and
its confirm is awaited there, with at most ``window`` messages unconfirmed at a time.

Why: a confirmed publish waits for the broker to write the message down (on RabbitMQ about a
millisecond), so a ``.delay()`` loop that waits for each confirm sends a few hundred a second
where a pipelined one sends thousands, with the same guarantee at the end: every message is
confirmed, or retried, or its failure raised. RabbitMQ's own guidance for publishers is this
(publish, keep a bounded window of outstanding confirms, handle them as they arrive).

How: one sender task on the loop publishes what has gathered as one batch (one write, one
wait for all its confirms), then the next: messages keep their order, and those sent while a
batch awaits its confirms make up the next one, so the loop's cost per message falls as the
rate rises (a group commit). A batch that fails is retried on the loop by
``task_publish_retry_policy``; one that still fails is kept, and the next sync send (or
:meth:`flush`, which ``app.close()`` and the interpreter's exit call) publishes it again and
raises if it cannot. So a send that returned is on the broker, or is being retried, or its
failure is raised to the process later; a process killed with messages in the window loses
them, as it would lose a send in progress.
Inside a worker the window is flushed when a task's body returns (before its result is
stored) and after its follow-ups are sent (before its message is acked): what a task sends is
on the broker before anyone can see it done, as when each send waited for its confirm.
``confirm_window: 0`` turns this off: each send waits for its own confirm.
"""

from __future__ import annotations

import asyncio
import atexit
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
        self._sending = False  # the sender task runs (or is about to)
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
        """Hand ``items`` to the loop; waits only while the window is full. Raises the failure
        of an earlier send that could not be published (after publishing it again)."""
        if not items:
            return
        self._resend_failed()
        with self._cond:
            while self._outstanding >= self.window:
                self._cond.wait()
            self._buffer.extend(items)
            self._outstanding += len(items)
            start = not self._sending
            self._sending = True
        if start:
            self.portal.loop.call_soon_threadsafe(self._start_sender)

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
    def _start_sender(self) -> None:
        task = asyncio.get_running_loop().create_task(self._sender())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sender(self) -> None:
        """Publish what has gathered, batch after batch, until nothing is left."""
        while True:
            with self._cond:
                batch, self._buffer = self._buffer, []
                if not batch:
                    self._sending = False
                    return
            error: BaseException | None = None
            try:
                await self._publish(batch)
            except asyncio.CancelledError as exc:  # the loop is closing: these are not sent
                error = exc
                raise
            except Exception as exc:
                error = exc
                logger.error("publishing %d message(s) failed: %r", len(batch), exc)
            finally:
                with self._cond:
                    self._outstanding -= len(batch)
                    if error is not None:
                        self._failed.append((batch, error))
                        if isinstance(error, asyncio.CancelledError):
                            self._sending = False
                    self._cond.notify_all()

    async def _publish(self, batch: list[Outgoing]) -> None:
        """One batch, retried by the publish retry policy (as a waited-for send would be)."""
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
