"""The worker's mailbox: remote-control requests in Celery's pidbox layout, answered.

The worker listens to the fanout exchange ``celery.pidbox`` (``<control_exchange>.pidbox``)
through :meth:`~celeriac.transports.base.Transport.listen`: transient, so nothing waits for a
worker that is not there (no per-node queue left behind by a worker killed with ``-9``). Each
request addressed to this node (:meth:`~celeriac.control.pidbox.ControlRequest.addressed_to`)
runs as its own asyncio task on the worker's loop, so a slow command (a revoke that writes to
the result backend) never delays another, and a ``ping`` is answered while the pool is busy:
the loop only fetches and settles, tasks run in threads, children or awaiting coroutines. A
reply goes, transient, to the caller through the direct exchange ``reply.celery.pidbox`` with its
oid as routing key (:mod:`celeriac.control.calls`).

The mailbox has its own broker connection, so a slow command never delays fetching tasks, and
the reverse. When it starts listening it reads the revokes kept on the broker once more
(:func:`~celeriac.worker.statedb.load_revokes`): those made while the worker was starting, after
the first read and before it listened, are not missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from celeriac.control.pidbox import Clock, ControlRequest, LamportClock, Mailbox, reply_message
from celeriac.control.sealing import RequestGuard, seal_reply
from celeriac.errors import DecodeError
from celeriac.routing import Exchange
from celeriac.transports.base import Listener, Transport
from celeriac.utils.outage import Outage
from celeriac.worker import commands_control
from celeriac.worker.commands import HANDLERS, NO_REPLY, Context, nok
from celeriac.worker.components import Component
from celeriac.worker.events_step import events_step
from celeriac.worker.statedb import load_revokes
from celeriac.worker.steps import start_with_retries

if TYPE_CHECKING:
    from celeriac.protocol.signing import Signer
    from celeriac.worker.worker import Worker

logger = logging.getLogger("celeriac.worker")

#: Requests a slow mailbox may fall behind by before the oldest are dropped.
LISTEN_BUFFER = 1000
#: Seconds between two tries to listen again after the broker was lost.
RETRY = 1.0
#: Seconds a warm stop gives the commands still running to send their replies.
STOP_GRACE = 2.0

assert commands_control  # imported for its commands (they register themselves)


class ControlStep(Component):
    name = "control"
    requires = ("connection", "pool", "consumer")

    def __init__(self) -> None:
        self.transport: Transport | None = None
        self.listener: Listener | None = None
        self.mailbox = Mailbox()
        self.clock: Clock = LamportClock()
        self._task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        #: Signs replies when the app signs (set when listening starts).
        self.signer: Signer | None = None

    def enabled(self, worker: Worker) -> bool:
        return bool(worker.app.conf.worker_enable_remote_control)

    async def start(self, worker: Worker) -> None:
        self.mailbox = Mailbox(worker.app.conf.control_exchange)
        events = events_step(worker)
        if events is not None and events.dispatcher is not None:
            self.clock = events.dispatcher.clock  # one clock for events and control, as Celery's

        async def listen(transport: Transport) -> Listener:
            listener = await self._listen(transport)
            await load_revokes(worker, "once listening")
            return listener

        self.transport, self.listener = await start_with_retries(
            worker, "listen for remote control on", listen
        )
        self._task = asyncio.create_task(self._loop(worker), name="celeriac-control")

    async def _listen(self, transport: Transport) -> Listener:
        listener = transport.listen(self.mailbox.exchange, buffer=LISTEN_BUFFER)
        await listener.open()
        return listener

    async def stop(self, worker: Worker) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._handlers and not worker.cold:
            await asyncio.wait(set(self._handlers), timeout=STOP_GRACE)
        for handler in list(self._handlers):
            handler.cancel()
        if self.listener is not None:
            with contextlib.suppress(Exception):
                await self.listener.close()
        if self.transport is not None:
            with contextlib.suppress(Exception):
                await self.transport.close()

    # -- receiving ------------------------------------------------------------------------------
    async def _loop(self, worker: Worker) -> None:
        assert self.transport is not None
        # the broker's outage is the consumer's too: one line for both, not one per second
        consumer = worker.consumer
        outage = consumer.outage if consumer is not None else Outage("control", logger)
        security = worker.app.security
        guard = RequestGuard(security.verifier) if security and security.verifier else None
        self.signer = security.signer if security else None
        while True:
            try:
                if self.listener is None:
                    self.listener = await self._listen(self.transport)
                    await load_revokes(worker, "after the broker came back")
                message = await self.listener.get(timeout=None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                outage.failed(exc, "listening for remote control")
                listener, self.listener = self.listener, None
                if listener is not None:
                    with contextlib.suppress(Exception):
                        await listener.close()
                await asyncio.sleep(RETRY)
                continue
            if message is None:  # no timeout given: the listener ended (its connection went)
                listener, self.listener = self.listener, None
                if listener is not None:
                    with contextlib.suppress(Exception):
                        await listener.close()
                await asyncio.sleep(RETRY)
                continue
            outage.ok()
            try:
                if guard is not None:
                    guard.check(message)
                request = ControlRequest.from_message(message)
            except DecodeError as exc:
                logger.warning("ignoring a control request: %s", exc.reason)
                continue
            self.clock.adjust(request.clock)
            if not request.addressed_to(worker.hostname):
                continue
            handler = asyncio.create_task(self._answer(worker, request))
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)

    async def _answer(self, worker: Worker, request: ControlRequest) -> None:
        ctx = Context(self.clock)
        handler = HANDLERS.get(request.method)
        result: Any
        if handler is None:
            logger.warning("unknown control command %r", request.method)
            result = nok(f"unknown command {request.method!r}")
        else:
            if worker.pool is not None:
                worker.pool.sync()  # what a pool's children run on their own, in the state
            try:
                result = await handler(worker, dict(request.arguments), ctx)
            except Exception as exc:
                logger.exception("control command %r failed", request.method)
                result = nok(repr(exc))
            if worker.consumer is not None:
                worker.consumer.rules_changed()  # enable_events, rate_limit: children hear it
        if request.wants_reply and result is not NO_REPLY:
            await self._reply(worker, request, result)
        for action in ctx.after_reply:
            action()

    async def _reply(self, worker: Worker, request: ControlRequest, result: Any) -> None:
        transport, reply_to = self.transport, request.reply_to
        if transport is None or reply_to is None:
            return
        exchange = str(reply_to.get("exchange") or self.mailbox.reply_exchange.name)
        routing_key = str(reply_to["routing_key"])
        message = reply_message(worker.hostname, result, request.ticket, self.clock.forward())
        message = seal_reply(message, self.signer)
        try:
            target = Exchange(exchange, "direct", durable=False)
            await transport.publish_transient(target, routing_key, [message])
        except Exception as exc:  # the caller goes without this reply; the worker goes on
            logger.warning("could not reply to %r: %s", request.method, exc)
