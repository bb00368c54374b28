"""Batch acknowledgements: every ack requested in one turn of the loop goes in one round trip.

A caller awaits its own ack (so an early-acked task starts only once the broker has forgotten
its message), but concurrent callers share a single ``transport.ack`` call.
"""

from __future__ import annotations

import asyncio

from celeriac.transports.base import Delivery, Transport


class AckBatcher:
    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._pending: list[tuple[Delivery, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def ack(self, delivery: Delivery) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((delivery, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        while self._pending:
            await asyncio.sleep(0)  # let acks requested in this same turn join the batch
            batch, self._pending = self._pending, []
            try:
                await self._transport.ack([delivery for delivery, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    async def drain(self) -> None:
        """Wait until every requested ack has been sent."""
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            await asyncio.gather(flusher, return_exceptions=True)
