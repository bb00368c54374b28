"""Leadership on RabbitMQ: a token in a single-active-consumer queue (design: amqp_store).

Every beat consumes ``P.leader`` with prefetch 1 and never acks. The queue has
``x-single-active-consumer``, so RabbitMQ delivers to one consumer only, the first one still
subscribed; the beat holding a delivered token leads. When that beat's channel or connection
closes (a clean resign, a crash, a connection RabbitMQ closed after missed heartbeats), the
token goes back to the queue and RabbitMQ delivers it to the next consumer, which then leads.

Keeping a token in the queue: a token can be lost only with the queue (deleted, or a
non-persistent message across a broker restart: tokens are persistent). A beat that is not
leading publishes a token whenever the queue has none ready; so the queue usually holds the
leader's token plus one spare, which only the active consumer would receive. Extra tokens are
harmless (prefetch 1: the active consumer holds one at a time) and the leader trims the spares
to one.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from celeriac.beat import amqp_queues

if TYPE_CHECKING:
    from aiormq.abc import DeliveredMessage

    from celeriac.transports.amqp.link import Link

#: How long :meth:`Leadership.check` waits for a token it has just published when this store is
#: the queue's only consumer (hence its active one): a lone beat leads on its first call.
TOKEN_WAIT = 2.0
TOKEN = b"celeriac beat leader token"


def heartbeat_for(ttl: float) -> int:
    """The AMQP heartbeat (whole seconds) that makes a frozen leader lose its token within ``ttl``.

    RabbitMQ closes a connection that has sent nothing for about three heartbeat intervals
    (measured on RabbitMQ 3.10 with a ``SIGSTOP``-ed leader: 5.4 s at 2 s, 8.4 s at 3 s, 11.5 s at
    4 s), and closing it hands the token on; so the heartbeat is a third of the lease, and at
    least 1 s, the protocol's unit. The lease is then also how long a leader's event loop may
    stall before it is taken for dead, as with a lease on Redis or SQLite.
    """
    return max(1, int(ttl / 3))


class Leadership:
    """This store's hold on the leader's token (see the module docstring)."""

    def __init__(self, queue: str, timeout: float) -> None:
        self.queue = queue
        self.timeout = timeout
        self._token: DeliveredMessage | None = None
        self._generation = -1

    def holds(self, link: Link) -> bool:
        """Whether the token delivered to this store is still on a live channel (no I/O)."""
        if self._token is None:
            return False
        if link.broken or link.consume_generation() != self._generation:
            self._token = None
        return self._token is not None

    async def check(self, link: Link) -> bool:
        """Whether this store holds a token now, proven by one round trip to RabbitMQ.

        Subscribes first if it is not yet. The round trip (a passive declare of the queue) is
        what makes a ``True`` mean something: RabbitMQ moves the token only when the holder's
        channel or connection closes, so a connection that still answers still holds it. The
        same answer says how many tokens are ready, to add a spare or trim the extras.
        """
        self.holds(link)
        if self.queue not in link.consumers:
            await link.raise_prefetch(1)
            await link.start_consuming(self.queue)
        control = await link.channel("control")
        ok = await control.queue_declare(self.queue, passive=True)
        self._take(link)
        ready = ok.message_count or 0
        if self._token is None:
            if ready == 0:
                await amqp_queues.publish(
                    link, [(self.queue, TOKEN, "token", "utf-8")], self.timeout
                )
                if (ok.consumer_count or 0) <= 1:  # only this store: the token comes here
                    await self.wait(link, TOKEN_WAIT)
        elif ready > 1:
            for _ in range(ready - 1):
                raw = await control.basic_get(self.queue, no_ack=True)
                if raw.delivery_tag is None:
                    break
        return self.holds(link)

    def _take(self, link: Link) -> None:
        buffer = link.buffers.get(self.queue)
        while buffer:
            message = buffer.popleft()
            if self._token is None:
                self._token, self._generation = message, link.generation
            # with prefetch 1 there is no second one; if there were, it stays unacked and
            # goes back with the channel

    async def wait(self, link: Link, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for RabbitMQ to deliver a token to this store."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.holds(link) and not link.broken:
            link.arrived.clear()
            self._take(link)
            remaining = deadline - loop.time()
            if self._token is not None or remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.arrived.wait(), remaining)
            self._take(link)
        return self.holds(link)

    async def resign(self, link: Link) -> None:
        """Close the channel holding the token: RabbitMQ cancels this consumer and puts the
        token back in one step, so the next consumer gets it at once."""
        token, self._token = self._token, None
        if token is not None and not link.broken and not token.channel.is_closed:
            await token.channel.close()
        link.consume_generation()  # forget the closed channel's consumer

    def forget(self) -> None:
        """The connection is gone, and the token with it."""
        self._token = None


__all__ = ["TOKEN_WAIT", "Leadership", "heartbeat_for"]
