"""``celeriac worker -B``: a beat inside the worker, on the worker's own event loop.

Safe on every worker of a fleet: each embedded beat is one more candidate for the store's lease,
and only the leader fires (see :mod:`celeriac.beat.scheduler`). It starts after the connection,
so a broker that cannot be reached fails the worker's start first, and stops before it, giving
its lease up at once so another beat takes over without waiting for the lease to run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from celeriac import signals
from celeriac.beat.scheduler import Beat
from celeriac.worker.components import Component

if TYPE_CHECKING:
    from celeriac.worker.worker import Worker

logger = logging.getLogger("celeriac.beat")


class BeatStep(Component):
    name = "beat"
    requires = ("connection",)

    def __init__(self) -> None:
        self.beat: Beat | None = None
        self._task: asyncio.Task[None] | None = None

    def enabled(self, worker: Worker) -> bool:
        return worker.embed_beat

    async def start(self, worker: Worker) -> None:
        self.beat = Beat(worker.app, node=f"{worker.hostname}:beat")
        signals.beat_embedded_init.send(self.beat)
        self._task = asyncio.create_task(self.beat.run(), name="celeriac-beat")

    async def stop(self, worker: Worker) -> None:
        if self.beat is not None:
            self.beat.stop()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, timeout=5)
