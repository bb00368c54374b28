"""Batch acknowledgements: every ack requested in one turn of the loop goes in one round trip.

``ack`` waits for its batch to reach the broker (a late ack must be settled before the worker
forgets the delivery); ``ack_soon`` does not wait (an early ack: the task may start while the
batch is on its way, which costs at most a redelivery if the worker dies in that window, never a
lost message). Either way concurrent acks share a single ``transport.ack`` call.

Early acks wait up to the transport's ``early_ack_delay`` for company: 2 ms on Redis and
SQLite, where a worker fetches by itself and one settle call per batch saves CPU on both sides
(measured: a prefork drain on Redis, parent 209-211 us of CPU per task with it, 259-296 without);
none on RabbitMQ, which pushes only while fewer than QoS deliveries are unacked, so an ack held
back is a delivery not pushed (measured: a prefork drain 1,400/s with 2 ms, 2,209/s without).

A transport that writes anyway when it starts waiting for messages takes the early acks
waiting then into that write (:meth:`Transport.carry_early_acks`; Redis does): on an idle
worker no company ever comes, and each early ack used to cost a timer, a round trip and a
wake-up of its own. So the first early ack of a quiet spell starts a timer, not a task, and
the transport's take drops it: nothing is left to send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from celeriac.transports.base import Delivery, Transport
from celeriac.utils.outage import Outage

#: How long early acks may wait to share a round trip with others, unless the transport says.
SOON_DELAY = 0.002


class AckBatcher:
    def __init__(self, transport: Transport, outage: Outage) -> None:
        self._transport = transport
        self._outage = outage
        self._soon = getattr(transport, "early_ack_delay", SOON_DELAY)
        self._pending: list[tuple[Delivery, asyncio.Future[None] | None]] = []
        self._flusher: asyncio.Task[None] | None = None
        #: The first early ack of a quiet spell starts a timer, not a task: on an idle worker
        #: the transport usually takes the ack before it fires, and the timer is dropped.
        self._timer: asyncio.TimerHandle | None = None
        self._napping = False
        transport.carry_early_acks(self)

    async def ack(self, delivery: Delivery) -> None:
        """Ack and wait until the broker has it (raises the transport's error)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._add(delivery, future)
        await future

    def ack_soon(self, delivery: Delivery) -> None:
        """Ack in the next batch without waiting; a failure is logged as a broker outage."""
        self._add(delivery, None)

    def take(self) -> list[Delivery]:
        """Hand the early acks waiting now to the transport, which settles them (the
        :class:`~celeriac.transports.base.EarlyAcks` side of this batcher)."""
        early = [delivery for delivery, future in self._pending if future is None]
        if not early:
            return []
        self._pending = [entry for entry in self._pending if entry[1] is not None]
        if not self._pending:  # nothing left to send: no wake-up for nothing
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._napping and self._flusher is not None:
                self._flusher.cancel()
        return early

    def failed(self, exc: BaseException, deliveries: Sequence[Delivery]) -> None:
        """Early acks could not be settled (by the transport that took them, or by a flush):
        logged as a broker outage; their messages come back when their leases end."""
        self._outage.failed(exc, f"acking {len(deliveries)} messages (they will come back)")

    def _add(self, delivery: Delivery, future: asyncio.Future[None] | None) -> None:
        self._pending.append((delivery, future))
        flusher = self._flusher
        if flusher is not None and not flusher.done() and not flusher.cancelling():
            return  # the flush under way sends it (it runs until nothing is pending)
        if future is None and self._soon > 0:
            # early acks only: nobody waits, so gather a few milliseconds' worth into one
            # round trip (a crash in that window costs a redelivery, never a lost message)
            if self._timer is None:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(self._soon, self._start, False)
            return
        self._start(True)

    def _start(self, wait_turn: bool) -> None:
        """Start the flush: now (the timer fired), or after this turn (an ack is waited for,
        or the broker wants early acks at once)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        flusher = self._flusher
        if flusher is None or flusher.done() or flusher.cancelling():  # (cut short by take)
            self._flusher = asyncio.create_task(self._flush(wait_turn))

    async def _flush(self, wait_turn: bool) -> None:
        if wait_turn:
            await asyncio.sleep(0)  # only let this turn's acks join
        while self._pending:
            batch, self._pending = self._pending, []
            deliveries = [delivery for delivery, _ in batch]
            try:
                await self._transport.ack(deliveries)
            except Exception as exc:
                if any(future is None for _, future in batch):
                    self.failed(exc, deliveries)
                for _, future in batch:
                    if future is not None and not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if future is not None and not future.done():
                        future.set_result(None)
            if any(future is not None for _, future in self._pending):
                await asyncio.sleep(0)
            elif self._pending:
                # early acks that came while that batch was on its way: the same few
                # milliseconds for company, unless the transport takes them first
                self._napping = True
                try:
                    await asyncio.sleep(self._soon)
                finally:
                    self._napping = False

    async def drain(self) -> None:
        """Wait until every requested ack has been sent (early acks waiting for company go
        now)."""
        if self._pending:
            self._start(False)
        while self._flusher is not None and not self._flusher.done():
            await asyncio.gather(self._flusher, return_exceptions=True)
