"""One remote-control call on a transport: publish the request, gather the replies.

Celery's order of things (kombu's ``Mailbox._broadcast``): the caller starts listening for
replies *before* it publishes the request (a worker answering at once must find it), reads
replies until it has ``limit`` of them (the number of destinations, when it named some) or
``timeout`` seconds have passed since it sent, then stops listening. A reply carrying another
ticket is not ours and is dropped. A cast (no reply wanted) is the publish alone.

Replies travel transient on the direct exchange ``reply.<namespace>.pidbox`` with the caller's
oid as routing key (:meth:`~celeriac.transports.base.Transport.listen` on a direct exchange): on
RabbitMQ an exclusive queue of the caller's bound with its oid, on Redis kombu's own list layout
(``_kombu.binding.reply.celery.pidbox``), so replies cross between Celery and celeriac both ways;
a listener leaves nothing behind when it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from celeriac.control.pidbox import ControlRequest, LamportClock, Mailbox, new_oid, read_reply
from celeriac.control.sealing import reply_is_trusted, seal_request
from celeriac.errors import DecodeError
from celeriac.protocol.message import Message
from celeriac.transports.base import Listener, Transport

if TYPE_CHECKING:
    from celeriac.protocol.signing import Signer, Verifier

logger = logging.getLogger("celeriac.control")

ReplyCallback = Callable[[dict[str, Any]], None]
#: Replies a caller holds unread at most (a cluster's worth).
BUFFER = 10_000


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
    signer: Signer | None = None,
    verifier: Verifier | None = None,
) -> list[dict[str, Any]] | None:
    """Send ``request``; with ``reply``, the replies (``[{node: result}, ...]``) in arrival
    order, else None. ``cleanup``: stop listening in a task kept there, after the replies are
    returned (the caller gets them a round trip or two sooner), instead of before. ``signer``
    signs the request, ``verifier`` drops replies not signed by a trusted key
    (:mod:`celeriac.control.sealing`)."""
    clock = clock or LamportClock()
    if not reply:
        request = replace(request, clock=clock.forward())
        cast = seal_request(request.to_message(), signer)
        await transport.publish_transient(mailbox.exchange, "", [cast])
        return None
    oid, ticket = new_oid(), str(uuid.uuid4())
    listener = transport.listen(mailbox.reply_exchange, [oid], buffer=BUFFER)
    await listener.open()
    try:
        request = replace(
            request,
            ticket=ticket,
            reply_to={"exchange": mailbox.reply_exchange.name, "routing_key": oid},
            clock=clock.forward(),
        )
        started = time.monotonic()
        sealed = seal_request(request.to_message(), signer)
        await transport.publish_transient(mailbox.exchange, "", [sealed])
        replies: list[dict[str, Any]] = []
        deadline = started + max(0.0, timeout)
        while limit is None or len(replies) < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            message = await listener.get(remaining)
            if message is None:
                break
            if not reply_is_trusted(message, verifier):
                continue
            body = _accept(message, ticket, clock)
            if body is None:
                continue
            replies.append(body)
            if callback is not None:
                callback(body)
        return replies
    finally:
        if cleanup is None:
            await _close(listener)
        else:
            task = asyncio.get_running_loop().create_task(_close(listener))
            cleanup.add(task)
            task.add_done_callback(cleanup.discard)


async def _close(listener: Listener) -> None:
    with contextlib.suppress(Exception):
        await listener.close()


def _accept(message: Message, ticket: str, clock: LamportClock) -> dict[str, Any] | None:
    """The body of a reply to this call, or None (unreadable, or another call's)."""
    try:
        reply = read_reply(message)
    except DecodeError as exc:
        logger.warning("ignoring an unreadable control reply: %s", exc)
        return None
    if reply.ticket is not None and reply.ticket != ticket:
        return None
    if reply.clock is not None:
        clock.adjust(reply.clock)
    return reply.body
