"""The RabbitMQ beat store's ``P.commands`` queue: readers peek at it, the leader applies it.

Every entry change is a :class:`~celeriac.beat.amqp_state.Command` published to ``P.commands``
(see :mod:`celeriac.beat.amqp_store`). Two parties read the queue:

* the leader (:class:`Inbox`) takes the waiting commands with ``basic.get``, applies them to its
  state, writes the snapshot, and only then acks them;
* a reader, while no beat is subscribed to ``P.leader`` (so none will apply them soon), peeks at
  them (:func:`peek_commands`): takes them and gives them all back with one ``basic.nack``,
  which returns them to their places.

**Each sender's order.** The queue is FIFO, but a command can be out of the queue for a moment
(a reader peeking at it; a leader that died holding it, whose channel RabbitMQ settles apart
from the token's queue), so the leader may see a sender's command ``n + 1`` before ``n``.
Applying it would be wrong twice over: ``n`` could undo it, and the sequence number it records
would make ``n`` look like a repeat. So a command ahead of its sender's next number waits,
held, until the missing one comes back (within a round trip, or a dead holder's heartbeat
timeout), and after :data:`GAP_WAIT` seconds is applied anyway, logged (a number that never
comes: a queue purged by hand; a sender whose send failed starts a new sender id instead).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from celeriac.beat.amqp_state import Command, Snapshot
from celeriac.errors import DecodeError
from celeriac.transports.amqp import wire

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel

    from celeriac.transports.amqp.link import Link

logger = logging.getLogger("celeriac.beat")

#: Commands read per call at most (a reader's view; the leader's batch per snapshot write).
DRAIN_LIMIT = 1000
#: How long a command ahead of its sender's next number waits for the missing one.
GAP_WAIT = 30.0


async def peek_commands(link: Link, queue: str) -> list[Command]:
    """The commands waiting in ``queue`` (up to :data:`DRAIN_LIMIT`), left there."""
    control = await link.channel("control")
    commands: list[Command] = []
    last: int | None = None
    for _ in range(DRAIN_LIMIT):
        raw = await control.basic_get(queue, no_ack=False)
        if raw.delivery_tag is None:
            break
        last = raw.delivery_tag
        with contextlib.suppress(DecodeError):  # the leader reports and drops it
            commands.append(Command.decode(raw.body))
        if not raw.message_count:
            break
    if last is not None:
        await control.basic_nack(last, multiple=True, requeue=True)
    return commands


@dataclass
class _Held:
    command: Command | None  # None: unreadable (acked and dropped)
    tag: int
    since: float


class Inbox:
    """The leader's side of the commands queue (see the module docstring)."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self._channel: AbstractChannel | None = None
        self._held: list[_Held] = []

    async def take(self, link: Link) -> None:
        """Take the waiting commands (unacked) to the ones already held."""
        control = await link.channel("control")
        if control is not self._channel:  # a new channel: the old one's were given back
            self._channel, self._held = control, []
        now = time.monotonic()
        for _ in range(DRAIN_LIMIT - len(self._held)):
            raw = await control.basic_get(self.queue, no_ack=False)
            if raw.delivery_tag is None:
                break
            try:
                command: Command | None = Command.decode(raw.body)
            except DecodeError as exc:
                logger.error("beat: dropping an unreadable command: %s", exc)
                command = None
            self._held.append(_Held(command, raw.delivery_tag, now))
            if not raw.message_count:
                break

    def apply(self, state: Snapshot) -> tuple[list[int], bool]:
        """Apply what is in order; the tags now settled (to ack after the snapshot is written)
        and whether the state changed. A command ahead of its sender stays held."""
        settled: list[int] = []
        changed = False
        now = time.monotonic()
        progress = True
        while progress:  # a command given back late can unblock the ones behind it
            progress = False
            for held in list(self._held):
                command = held.command
                if command is not None:
                    verdict = state.admit(command)
                    if verdict == "early":
                        if now - held.since < GAP_WAIT:
                            continue
                        logger.warning(
                            "beat: applying command %d of sender %s without the ones before it "
                            "(not seen for %.0f s)",
                            command.seq,
                            command.sender,
                            GAP_WAIT,
                        )
                    if verdict != "repeat":
                        changed |= state.apply(command)
                self._held.remove(held)
                settled.append(held.tag)
                progress = True
        return settled, changed

    async def ack(self, tags: list[int]) -> None:
        if tags and self._channel is not None and not self._channel.is_closed:
            await wire.ack(self._channel, tags)

    async def give_back(self) -> None:
        """Return every held command to the queue (this store no longer leads). Best effort:
        a broken channel has returned them already."""
        held, self._held = self._held, []
        channel = self._channel
        if channel is None or channel.is_closed:
            return
        with contextlib.suppress(Exception):
            for item in held:
                await channel.basic_nack(item.tag, multiple=False, requeue=True)

    def forget(self) -> None:
        """The connection is gone: RabbitMQ has put everything held back."""
        self._channel, self._held = None, []


__all__ = ["DRAIN_LIMIT", "GAP_WAIT", "Inbox", "peek_commands"]
