"""The worker's events component: its dispatcher, its worker events, task events on or off.

As in Celery, a worker always sends ``worker-online`` when it starts, ``worker-heartbeat`` every
2 seconds and ``worker-offline`` when it stops (monitors tell live workers from lost ones by
them), and sends ``task-*`` events only with ``-E`` (``worker_send_task_events``), which remote
control switches at run time: the control commands ``enable_events`` and ``disable_events`` call
:meth:`EventsStep.enable` and :meth:`EventsStep.disable`, and ``heartbeat`` calls
:meth:`EventsStep.heartbeat`; :func:`events_step` finds the component of a worker.

The dispatcher publishes on a broker connection of its own, so a slow broker delays neither
fetching nor settling, and it lives in the worker's main process: prefork children send nothing.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from celeriac.events.dispatcher import EventDispatcher
from celeriac.events.event import event_exchange, load_average, software_info
from celeriac.worker.components import Component
from celeriac.worker.steps import start_with_retries

if TYPE_CHECKING:
    from celeriac.transports.base import Transport
    from celeriac.worker.worker import Worker

logger = logging.getLogger("celeriac.worker")

#: Seconds between heartbeats (Celery's ``Heart`` interval; monitors expect 2).
HEARTBEAT_INTERVAL = 2.0
#: The ``freq`` a heartbeat asked for by the ``heartbeat`` control command carries (Celery's).
REQUESTED_HEARTBEAT_FREQ = 5


def celeriac_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("celeriac")
    except PackageNotFoundError:  # pragma: no cover - a source tree without metadata
        return "0"


def events_step(worker: Worker) -> EventsStep | None:
    """The running events component of ``worker`` (None before it started)."""
    for component in worker.components:
        if isinstance(component, EventsStep):
            return component
    return None


class EventsStep(Component):
    name = "events"
    requires = ("timer", "consumer")

    def __init__(self) -> None:
        self.dispatcher: EventDispatcher | None = None
        self._worker: Worker | None = None
        self._software: dict[str, str] = {}

    async def start(self, worker: Worker) -> None:
        transport, _ = await start_with_retries(worker, "open the events link to", _nothing)
        groups = {"worker", "task"} if worker.send_task_events else {"worker"}
        dispatcher = EventDispatcher(
            transport,
            worker.hostname,
            exchange=event_exchange(worker.app.conf.event_exchange),
            groups=groups,
        )
        dispatcher.start()
        self.dispatcher, self._worker = dispatcher, worker
        self._software = software_info(celeriac_version())
        if worker.consumer is not None:
            worker.consumer.events = dispatcher
        self._send("worker-online")
        worker.timer.every(HEARTBEAT_INTERVAL, self._beat, "event-heartbeat")

    async def stop(self, worker: Worker) -> None:
        dispatcher, self.dispatcher = self.dispatcher, None
        if dispatcher is None:
            return
        if worker.consumer is not None:
            worker.consumer.events = None
        dispatcher.flush()  # the last task events go before worker-offline
        self._send("worker-offline", dispatcher)
        try:
            await dispatcher.close(timeout=0.5 if worker.cold else 2.0)
            logger.info(
                "events: %d sent in %d messages (%d publish calls), %d dropped",
                dispatcher.events_sent,
                dispatcher.messages_sent,
                dispatcher.publishes,
                dispatcher.dropped,
            )
        finally:
            with contextlib.suppress(Exception):
                await dispatcher.transport.close()

    # -- what remote control calls ------------------------------------------------------------
    @property
    def task_events(self) -> bool:
        """Whether ``task-*`` events are sent now."""
        return self.dispatcher is not None and self.dispatcher.sends("task")

    def enable(self) -> None:
        """Send ``task-*`` events from now on (the ``enable_events`` command)."""
        if self.dispatcher is not None and not self.task_events:
            self.dispatcher.enable_group("task")
            logger.info("task events enabled")

    def disable(self) -> None:
        """Stop sending ``task-*`` events (``disable_events``); worker events go on."""
        if self.dispatcher is not None and self.task_events:
            self.dispatcher.disable_group("task")
            logger.info("task events disabled")

    def heartbeat(self) -> None:
        """Send a ``worker-heartbeat`` now, as Celery's ``heartbeat`` command does (``freq`` 5
        and the software fields only)."""
        if self.dispatcher is not None:
            self.dispatcher.send(
                "worker-heartbeat", freq=REQUESTED_HEARTBEAT_FREQ, **self._software
            )

    # -- worker events ------------------------------------------------------------------------
    async def _beat(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.refresh()
            self._send("worker-heartbeat")

    def _send(self, type_: str, dispatcher: EventDispatcher | None = None) -> None:
        dispatcher = dispatcher or self.dispatcher
        worker = self._worker
        if dispatcher is None or worker is None:
            return
        dispatcher.send(
            type_,
            freq=HEARTBEAT_INTERVAL,
            active=len(worker.state.active),
            processed=worker.state.processed,
            loadavg=load_average(),
            **self._software,
        )


async def _nothing(transport: Transport) -> None:
    """The events link needs nothing but its connection (events are declared as sent)."""
