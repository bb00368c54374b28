"""The RabbitMQ beat leader's copy of the state: loaded when it takes over, changed by the
commands it applies and the runs it records, written back after every change.

Only the beat holding the token has a :class:`Ledger` with a state (see
:mod:`celeriac.beat.amqp_store` for the design); every write goes to both last-value queues,
``P.state`` (read by the next leader only) and ``P.view`` (read by everyone else), in one
confirmed batch on the connection that holds the token, so a leader RabbitMQ has cut off cannot
write.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from celeriac.beat import amqp_queues
from celeriac.beat.amqp_commands import Inbox
from celeriac.beat.amqp_queues import BeatQueues
from celeriac.beat.amqp_state import Snapshot

if TYPE_CHECKING:
    from celeriac.transports.amqp.link import Link

logger = logging.getLogger("celeriac.beat")

#: How long a new leader that finds no snapshot waits for one a dead leader held (and a reader
#: that finds none, for one another reader is peeking at): returned within a round trip, so
#: this only bounds the wait for a state never written.
SETTLE_WAIT = 0.2


class Ledger:
    """The leader's state and its inbox of commands (``state`` is None when not leading)."""

    def __init__(self, queues: BeatQueues, timeout: float) -> None:
        self.queues = queues
        self.timeout = timeout
        self.state: Snapshot | None = None
        self.node = ""
        self.inbox = Inbox(queues.commands)

    async def take_over(self, link: Link, node: str) -> None:
        """Load the state (``P.state``; ``P.view`` if that is empty), apply what waits, and
        write it (so both queues hold the same snapshot, naming this leader)."""
        self.node = node
        state = await amqp_queues.peek(link, self.queues.state)
        if state is None:
            state = await amqp_queues.peek(link, self.queues.view)
        if state is None:
            # Still nothing: either no beat has ever written (a fresh vhost), or the previous
            # leader died while it held the P.state message, and RabbitMQ, which handed the
            # token on, has not put that message back yet (queues settle a closed channel's
            # messages independently). Wait on a consumer for it, briefly, before starting
            # empty: an empty snapshot written now would push the returning one out.
            state = await amqp_queues.peek(link, self.queues.state, SETTLE_WAIT)
        self.state = state or Snapshot()
        logger.info(
            "beat: %s leads (state version %d, %d entries%s)",
            node,
            self.state.version,
            len(self.state.entries),
            "" if state else ", none stored yet",
        )
        await self.apply_commands(link, write=True)

    async def apply_commands(self, link: Link, write: bool = False) -> None:
        """Apply the waiting commands, write the snapshot, then ack them. If the write fails,
        the caller drops the connection, which gives every held command back."""
        state = self.state
        assert state is not None
        await self.inbox.take(link)
        settled, changed = self.inbox.apply(state)
        if changed or write:
            await self.write(link)
        await self.inbox.ack(settled)

    async def record_runs(self, link: Link, runs: Mapping[str, float]) -> None:
        assert self.state is not None
        self.state.record_runs(runs)
        await self.write(link)

    async def write(self, link: Link) -> None:
        state = self.state
        assert state is not None
        state.serial += 1
        state.leader = self.node
        body, encoding = state.encode()
        await amqp_queues.publish(
            link,
            [
                (self.queues.state, body, "snapshot", encoding),
                (self.queues.view, body, "snapshot", encoding),
            ],
            self.timeout,
        )

    def drop(self) -> None:
        """This store does not lead (any more): forget the leader's copy."""
        if self.state is not None:
            logger.info("beat: %s no longer leads", self.node or "this node")
        self.state = None

    async def step_down(self) -> None:
        """:meth:`drop` on a live connection: the commands held unapplied go back too."""
        self.drop()
        await self.inbox.give_back()

    def forget(self) -> None:
        """The connection is gone (RabbitMQ has put back everything it held)."""
        self.drop()
        self.inbox.forget()


__all__ = ["SETTLE_WAIT", "Ledger"]
