"""One remote-control call on a transport: publish the request, gather the replies.

Celery's order of things (kombu's ``Mailbox._broadcast``): the caller declares its reply queue
*before* it publishes the request (a worker answering at once must find it), reads replies
until it has ``limit`` of them (the number of destinations, when it named some) or ``timeout``
seconds have passed since it sent, then deletes the queue. A reply carrying another ticket is
not ours and is dropped. A cast (no reply wanted) is the publish alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from celeriac.control.pidbox import ControlRequest, LamportClock, Mailbox, new_oid, read_reply
from celeriac.errors import DecodeError
from celeriac.transports.base import Delivery, Transport

logger = logging.getLogger("celeriac.control")

ReplyCallback = Callable[[dict[str, Any]], None]
#: Replies read per round trip.
BATCH = 100


async def call(
    transport: Transport,
    mailbox: Mailbox,
    request: ControlRequest,
    *,
    reply: bool,
    timeout: float,
    limit: int | None,
    callback: ReplyCallback | None = None,
    clock: LamportClock | None = None,
    cleanup: set[asyncio.Task[None]] | None = None,
) -> list[dict[str, Any]] | None:
    """Send ``request``; with ``reply``, the replies (``[{node: result}, ...]``) in arrival
    order, else None. ``cleanup``: delete the reply queue in a task kept there, after the
    replies are returned (the caller gets them a round trip or two sooner), instead of
    before."""
    clock = clock or LamportClock()
    if not reply:
        request = replace(request, clock=clock.forward())
        await transport.publish_transient(mailbox.exchange, "", [request.to_message()])
        return None
    oid, ticket = new_oid(), str(uuid.uuid4())
    queue = mailbox.reply_queue(oid)
    await transport.declare_queue(queue)
    try:
        request = replace(
            request,
            ticket=ticket,
            reply_to={"exchange": mailbox.reply_exchange.name, "routing_key": oid},
            clock=clock.forward(),
        )
        started = time.monotonic()
        await transport.publish_transient(mailbox.exchange, "", [request.to_message()])
        replies: list[dict[str, Any]] = []
        held: list[Delivery] = []
        deadline = started + max(0.0, timeout)
        while limit is None or len(replies) < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            deliveries = await transport.get([queue.name], BATCH, remaining)
            held.extend(deliveries)
            for delivery in deliveries:
                body = _accept(delivery, ticket, clock)
                if body is None:
                    continue
                replies.append(body)
                if callback is not None:
                    callback(body)
        if held:
            with contextlib.suppress(Exception):  # the queue goes next anyway
                await transport.ack(held)
        return replies
    finally:
        if cleanup is None:
            await _delete(transport, queue.name)
        else:
            task = asyncio.get_running_loop().create_task(_delete(transport, queue.name))
            cleanup.add(task)
            task.add_done_callback(cleanup.discard)


async def _delete(transport: Transport, name: str) -> None:
    with contextlib.suppress(Exception):
        await transport.delete_queue(name)


def _accept(delivery: Delivery, ticket: str, clock: LamportClock) -> dict[str, Any] | None:
    """The body of a reply to this call, or None (unreadable, or another call's)."""
    try:
        message = delivery.decode()
    except DecodeError:
        message = None  # not a task message: a reply as kombu or RabbitMQ carries it
    try:
        reply = read_reply(delivery.payload, message)
    except DecodeError as exc:
        logger.warning("ignoring an unreadable control reply: %s", exc)
        return None
    if reply.ticket is not None and reply.ticket != ticket:
        return None
    if reply.clock is not None:
        clock.adjust(reply.clock)
    return reply.body
