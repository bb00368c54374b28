"""Leadership on RabbitMQ: a token in a single-active-consumer queue (design: amqp_store).

Every beat consumes ``P.leader`` with prefetch 1 and never acks. The queue has
``x-single-active-consumer``, so RabbitMQ delivers to one consumer only, the first one still
subscribed; the beat holding a delivered token leads. When that beat's channel or connection
closes, the token goes back to the queue and RabbitMQ delivers it to the next consumer, which
then leads. The lease is enforced two ways:

* not renewed: a leader that does not call ``lead()`` again within ``ttl`` gives the token up
  itself (:class:`Expiry`), as an unrenewed lease on Redis expires;
* dead or unreachable: the ``ttl`` sets the connection's heartbeat (:func:`heartbeat_for`) and
  RabbitMQ hands the token on when it closes the connection. A killed leader (``kill -9``, a
  crash): the kernel closes its TCP connection at once, so the next beat holds the token within
  milliseconds (measured: 6-10 ms), with no wait for the lease to run out. A frozen leader
  (``SIGSTOP``, a VM pause, a blocked event loop) or a lost network: RabbitMQ closes the
  connection after about three heartbeats without a frame, about 0.6 ``ttl`` (measured: 5.4 s
  for the default 10 s lease, 2.5 s for 4 s). When the frozen beat wakes, its next ``lead()``
  fails its round trip and answers ``False``; its snapshot writes fail too (same connection);
* a clean resign or close closes the channel: the next beat holds the token within a round
  trip (measured: 3-5 ms).

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
from collections.abc import Callable
from typing import TYPE_CHECKING

from celeriac.beat import amqp_queues

if TYPE_CHECKING:
    from aiormq.abc import DeliveredMessage

    from celeriac.transports.amqp.link import Link

TOKEN = b"celeriac beat leader token"


def heartbeat_for(ttl: float) -> int:
    """The AMQP heartbeat (whole seconds) that makes a frozen leader lose its token within ``ttl``.

    RabbitMQ closes a connection that has sent nothing for about three heartbeat intervals
    (measured on RabbitMQ 3.10 with a ``SIGSTOP``-ed leader: 2.5 s at 1 s, 5.4 s at 2 s, 8.4 s at
    3 s, 11.5 s at 4 s), and closing it hands the token on. A fifth of the lease makes that
    about 0.6 ``ttl``, which leaves a standby that asks every third of the lease (the
    scheduler's cadence) time to take over within the lease; at least 1 s, the protocol's unit.
    The lease is then also how long a leader's event loop may stall before it is taken for
    dead, as with a lease on Redis or SQLite (10 s: a stall of about 5 s).
    """
    return max(1, int(ttl / 5))


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
        """Whether this store holds a token now, decided by round trips to RabbitMQ, no wait.

        Subscribes first if it is not yet. Then a passive declare of the queue *on the
        consuming channel*: RabbitMQ answers it after every delivery its queue already made to
        that channel, so a token on its way here has arrived when the answer does. That round
        trip is also what makes a ``True`` mean something: RabbitMQ moves the token only when
        its holder's channel or connection closes, so a channel that still answers still holds
        it. With no token here and none ready, one is published: RabbitMQ delivers it before
        confirming it (a persistent message is confirmed once stored), to the active consumer
        if its prefetch has room, that is if nobody holds a token; a second declare then shows
        whether that consumer was this store. A token ready and none here means the active
        consumer, another store, already holds one.
        """
        self.holds(link)
        if self.queue not in link.consumers:
            await link.raise_prefetch(1)
            await link.start_consuming(self.queue)
        ready = await self._flush(link)
        if self._token is None and ready == 0:
            await amqp_queues.publish(link, [(self.queue, TOKEN, "token", "utf-8")], self.timeout)
            ready = await self._flush(link)
        if self._token is not None and ready > 1:  # spares beyond one: take them away
            control = await link.channel("control")
            for _ in range(ready - 1):
                raw = await control.basic_get(self.queue, no_ack=True)
                if raw.delivery_tag is None:
                    break
        return self.holds(link)

    async def _flush(self, link: Link) -> int:
        """A passive declare on the consuming channel (see :meth:`check`); the tokens ready."""
        channel = await link.channel("consume")
        ok = await channel.queue_declare(self.queue, passive=True)
        await asyncio.sleep(0)  # let the consumer callback of a delivery just read run
        self._take(link)
        return ok.message_count or 0

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

    def subscribed(self, link: Link) -> bool:
        """Whether this store is among the queue's consumers (no I/O)."""
        link.consume_generation()
        return self.queue in link.consumers

    async def resign(self, link: Link) -> None:
        """Close the consuming channel: RabbitMQ cancels this consumer and puts a token it
        held back in one step, so the next consumer gets it at once. Also how a standby that
        stopped asking leaves the queue (else the token could be delivered to it and stay)."""
        token, self._token = self._token, None
        if link.broken:
            return
        if token is not None:
            channel = token.channel
        elif self.subscribed(link):
            channel = await link.channel("consume")
        else:
            return
        if not channel.is_closed:
            await channel.close()
        link.consume_generation()  # forget the closed channel's consumer

    def forget(self) -> None:
        """The connection is gone, and the token with it."""
        self._token = None


class Expiry:
    """The deadline of a store's last ``lead()`` call: ``ttl`` after it (the lease runs from the
    call, as on Redis), ``lapse`` is called, which under the store's lock gives up the token
    (a leader that stopped renewing) or leaves the queue (a standby that stopped asking) if
    :meth:`due` still says so then."""

    def __init__(self, lapse: Callable[[], object]) -> None:
        self._lapse = lapse
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0

    def renew(self, asked: float, ttl: float) -> None:
        """The lease, asked for at loop time ``asked``, holds until ``asked + ttl``."""
        self.cancel()
        self._deadline = asked + ttl
        self._timer = asyncio.get_running_loop().call_at(self._deadline, self._lapse)

    def due(self) -> bool:
        """Whether the deadline has passed (a renewal since the timer fired moved it; asyncio
        may fire a timer up to its clock resolution early, which counts as on time)."""
        return asyncio.get_running_loop().time() >= self._deadline - 0.01

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


__all__ = ["Expiry", "Leadership", "heartbeat_for"]
