"""Remote control, the worker's side: a queue of its own on the control exchange.

Commands: ``revoke`` (add ids to the revoked set; with ``terminate``, stop them in the pool) and
``rate_limit`` (change a task type's limit at run time). The control loop uses a transport of its
own, so a slow command never delays fetching tasks and the reverse.

The arguments are read under Celery's names, so ``app.control.broadcast("rate_limit",
arguments={"task_name": "shop.add", "rate_limit": "10/m"})`` and ``broadcast("revoke",
arguments={"task_id": id})`` work as in Celery, and under celeriac's own (``rate``,
``task_ids``). A command that cannot apply (an unknown task, a bad rate) is logged as a warning
and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

import orjson

from celeriac import states
from celeriac.control import CONTROL_EXCHANGE, CONTROL_TASK
from celeriac.errors import DecodeError, ImproperlyConfigured, TaskRevokedError, TransportError
from celeriac.results.base import ResultMeta, exception_to_dict
from celeriac.routing import Binding, Queue
from celeriac.transports.base import Delivery, Transport
from celeriac.utils.outage import Outage
from celeriac.utils.rates import parse_rate
from celeriac.worker.components import Component

if TYPE_CHECKING:
    from celeriac.worker.worker import Worker

logger = logging.getLogger("celeriac.worker")


class ControlStep(Component):
    name = "control"
    requires = ("connection", "pool", "consumer")

    def __init__(self) -> None:
        self.transport: Transport | None = None
        self.queue: Queue | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, worker: Worker) -> None:
        transport = worker.app.create_transport()
        await transport.connect()
        name = f"celeriac.control.{worker.hostname}.{os.getpid()}"
        queue = Queue(
            name,
            durable=False,
            auto_delete=True,
            bindings=(Binding(CONTROL_EXCHANGE.name, name, ""),),
        )
        await transport.declare_exchange(CONTROL_EXCHANGE)
        await transport.declare_queue(queue)
        self.transport, self.queue = transport, queue
        self._task = asyncio.create_task(self._loop(worker), name="celeriac-control")

    async def stop(self, worker: Worker) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.transport is not None:
            with contextlib.suppress(Exception):
                await self.transport.close()

    async def _loop(self, worker: Worker) -> None:
        assert self.transport is not None and self.queue is not None
        # the broker's outage is the consumer's too: one line for both, not one per second
        consumer = worker.consumer
        outage = consumer.outage if consumer is not None else Outage("control queue", logger)
        while True:
            try:
                deliveries = await self.transport.get([self.queue.name], 10, 1.0)
            except TransportError as exc:
                outage.failed(exc, "reading remote-control commands")
                await asyncio.sleep(1.0)
                continue
            outage.ok()
            for delivery in deliveries:
                await self._handle(worker, delivery)
            if deliveries:
                await self.transport.ack(deliveries)

    async def _handle(self, worker: Worker, delivery: Delivery) -> None:
        try:
            message = delivery.decode()
            if message.task != CONTROL_TASK:
                raise DecodeError(f"not a control message: {message.task!r}")
            payload = orjson.loads(message.body)
            command = str(message.headers.get("command", ""))
            arguments: dict[str, Any] = payload.get("arguments") or {}
            destination = payload.get("destination")
        except (DecodeError, orjson.JSONDecodeError, AttributeError) as exc:
            logger.warning("ignoring a malformed control message: %s", exc)
            return
        if destination and worker.hostname not in destination:
            return
        handler = HANDLERS.get(command)
        if handler is None:
            logger.warning("unknown control command %r", command)
            return
        try:
            await handler(worker, arguments)
        except Exception:
            logger.exception("control command %r failed", command)


def _task_ids(arguments: dict[str, Any]) -> list[str]:
    """``task_ids`` (celeriac's) or ``task_id`` (Celery's): one id or a list of them."""
    given = arguments.get("task_ids", arguments.get("task_id")) or []
    return [given] if isinstance(given, str) else [str(i) for i in given]


async def revoke(worker: Worker, arguments: dict[str, Any]) -> None:
    ids = _task_ids(arguments)
    for task_id in ids:
        worker.state.revoked.add(task_id)
    terminated = []
    if arguments.get("terminate") and worker.pool is not None:
        for task_id in ids:
            if task_id in worker.state.active and await worker.pool.terminate(task_id):
                terminated.append(task_id)
    logger.info(
        "revoked %s%s",
        ", ".join(ids),
        f" (terminated {', '.join(terminated)})" if terminated else "",
    )
    waiting = [i for i in ids if i not in worker.state.active]
    if waiting:
        await asyncio.to_thread(_store_revoked, worker, waiting)


def _store_revoked(worker: Worker, task_ids: list[str]) -> None:
    """REVOKED is stored when the revoke arrives (as Celery 5.6+ does), for the tasks not
    running here and not finished: ``AsyncResult.state`` says REVOKED at once, even for a task
    whose message waits for its countdown. A running task gets its state when it stops."""
    backend = worker.app.backend
    if backend is None:
        return
    for task_id in task_ids:
        try:
            if backend.get_meta(task_id).ready:
                continue  # finished already (or revoked by another worker)
            error = TaskRevokedError("revoked")
            backend.store(ResultMeta(task_id, states.REVOKED, exception_to_dict(error)))
        except Exception as exc:  # the revoke itself holds: the message is not run
            logger.warning("revoke of %s: its REVOKED state was not stored: %s", task_id, exc)


async def rate_limit(worker: Worker, arguments: dict[str, Any]) -> None:
    """Celery's ``rate_limit(task_name, rate_limit)``; ``None``, ``0`` or ``"0"`` removes it."""
    name = str(arguments.get("task_name"))
    rate = arguments["rate_limit"] if "rate_limit" in arguments else arguments.get("rate")
    if worker.consumer is None:
        return
    if name not in worker.app.tasks:
        logger.warning("rate_limit: unknown task %r (this worker has no such task)", name)
        return
    text = None if rate is None else str(rate)
    try:
        parse_rate(text)
    except ImproperlyConfigured as exc:
        logger.warning("rate_limit for %s: %s", name, exc)
        return
    worker.consumer.set_rate_limit(name, text)
    logger.info("rate limit of %s set to %s", name, rate)


HANDLERS = {"revoke": revoke, "rate_limit": rate_limit}
