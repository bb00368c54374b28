"""The RabbitMQ beat store's queues: names, arguments, and the few operations done on them.

Four durable classic queues per beat namespace ``P`` (``celeriac.beat`` by default), each with
one job (why each exists: :mod:`celeriac.beat.amqp_store`):

* ``P.leader``   ``x-single-active-consumer``: holds the leader's token;
* ``P.state``    ``x-max-length: 1``, ``x-overflow: drop-head``: the latest snapshot, read only
  by a beat that has just become leader;
* ``P.view``     the same, holding the same snapshot: what every other reader peeks at;
* ``P.commands`` the entry changes waiting for the leader, in the order they were sent.

``x-queue-type: classic`` is explicit, so a vhost whose default queue type is quorum does not
turn the peeked queues into quorum queues (whose delivery limit would drop a message that has
been peeked, hence returned, too often). Every message is persistent and every publish waits for
its confirm, so what the store says it wrote survives a broker restart.

Only :mod:`celeriac.transports.amqp` imports the AMQP client; this module drives the channels it
hands out (:class:`~celeriac.transports.amqp.link.Link`) and imports the client's types for the
type checker only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celeriac.beat.amqp_state import JSON, Snapshot, newest
from celeriac.errors import DecodeError, TransportError
from celeriac.protocol.message import Message
from celeriac.transports.amqp.codec import properties_for

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, DeliveredMessage

    from celeriac.transports.amqp.link import Link

logger = logging.getLogger("celeriac.beat")

CLASSIC = {"x-queue-type": "classic"}
LEADER_ARGUMENTS: dict[str, Any] = {**CLASSIC, "x-single-active-consumer": True}
LAST_VALUE_ARGUMENTS: dict[str, Any] = {**CLASSIC, "x-max-length": 1, "x-overflow": "drop-head"}
COMMANDS_ARGUMENTS: dict[str, Any] = dict(CLASSIC)
#: Snapshots taken from a queue in one peek at most (it holds one, two during a write).
PEEK_LIMIT = 8


@dataclass(frozen=True)
class BeatQueues:
    """The queue names of one beat namespace (see the module docstring)."""

    prefix: str

    @property
    def leader(self) -> str:
        return f"{self.prefix}.leader"

    @property
    def state(self) -> str:
        return f"{self.prefix}.state"

    @property
    def view(self) -> str:
        return f"{self.prefix}.view"

    @property
    def commands(self) -> str:
        return f"{self.prefix}.commands"

    def arguments(self) -> dict[str, dict[str, Any]]:
        """Each queue's name and declaration arguments."""
        return {
            self.leader: LEADER_ARGUMENTS,
            self.state: LAST_VALUE_ARGUMENTS,
            self.view: LAST_VALUE_ARGUMENTS,
            self.commands: COMMANDS_ARGUMENTS,
        }


async def declare(link: Link, queues: BeatQueues) -> None:
    """Declare the four queues (idempotent); a queue that exists with other arguments is
    reported by name, with the arguments this store needs, instead of RabbitMQ's bare
    ``PRECONDITION_FAILED``."""
    for name, arguments in queues.arguments().items():
        channel = await link.channel("control")
        try:
            await channel.queue_declare(name, durable=True, arguments=arguments)
        except Exception as exc:  # the AMQP client's errors are not importable here
            if "PRECONDITION_FAILED" in str(exc):
                raise TransportError(
                    f"RabbitMQ queue {name!r} exists with other arguments than beat needs "
                    f"({arguments}); delete it (it is recreated) or choose another beat prefix"
                ) from None
            raise


def properties(kind: str, encoding: str = "utf-8") -> Any:
    """Persistent message properties (built by the AMQP codec), with the kind in a header."""
    return properties_for(
        Message(
            headers={"celeriac-beat": kind}, body=b"", content_type=JSON, content_encoding=encoding
        )
    )


async def publish(link: Link, items: Sequence[tuple[str, bytes, str, str]], timeout: float) -> None:
    """Publish ``(queue, body, kind, encoding)`` messages and wait for every confirm.

    Raises :class:`TransportError` when a message was returned unroutable (its queue is gone).
    """
    frames = [
        ("", queue, body, properties(kind, encoding)) for queue, body, kind, encoding in items
    ]
    counts = await link.send(frames, timeout)
    missing = [item[0] for item, routed in zip(items, counts, strict=True) if not routed]
    if missing:
        raise TransportError(f"RabbitMQ returned a beat message: queue {missing[0]!r} is missing")


def _decode(raw: DeliveredMessage) -> Snapshot | None:
    try:
        return Snapshot.decode(raw.body, raw.header.properties.content_encoding)
    except DecodeError as exc:
        logger.error("beat: a stored snapshot is unreadable and is ignored: %s", exc)
        return None


async def peek(link: Link, queue: str, wait: float = 0.0) -> Snapshot | None:
    """The newest snapshot in ``queue``, left there (taken by ``basic.get``, then returned).

    A queue briefly holds two snapshots (a write landed while another reader held the older
    one); the older ones are acked away here. A queue that looks empty may only be held by
    another reader for a round trip: with ``wait``, a consumer waits that long for it to come
    back before the queue is taken as empty (see :func:`_await_held`).
    """
    control = await link.channel("control")
    taken: list[DeliveredMessage] = []
    while len(taken) < PEEK_LIMIT:
        raw = await control.basic_get(queue, no_ack=False)
        if raw.delivery_tag is None:
            break
        taken.append(raw)
        if not raw.message_count:
            break
    if not taken:
        return await _await_held(link, queue, wait) if wait > 0 else None
    if len(taken) == 1:  # the usual case: give it back before decoding
        await control.basic_reject(_tag(taken[0]), requeue=True)
        return _decode(taken[0])
    found = [(raw, _decode(raw)) for raw in taken]
    best = newest(s for _, s in found if s is not None)
    for raw, snapshot in found:
        if snapshot is best:
            await control.basic_reject(_tag(raw), requeue=True)
        else:  # superseded (or unreadable): the newest one stays
            await control.basic_ack(_tag(raw))
    return best


def _tag(raw: DeliveredMessage) -> int:
    tag = raw.delivery_tag
    assert tag is not None  # a get-ok always has one
    return tag


async def _await_held(link: Link, queue: str, wait: float) -> Snapshot | None:
    """Consume ``queue`` for up to ``wait`` seconds on a channel of its own, then close it
    (which returns whatever it received): a snapshot another reader was holding is delivered
    here the moment that reader returns it; an empty queue costs the wait."""
    arrived: list[DeliveredMessage] = []
    event = asyncio.Event()

    async def on_message(message: DeliveredMessage) -> None:
        arrived.append(message)
        event.set()

    wrapper = link.connection.channel()
    await wrapper.initialize()
    try:
        channel: AbstractChannel = await wrapper.get_underlay_channel()
        await channel.basic_consume(queue, on_message, no_ack=False)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), wait)
    finally:
        await wrapper.close()
    return newest(s for s in map(_decode, arrived) if s is not None)


async def consumers(link: Link, queue: str) -> int:
    """How many consumers ``queue`` has (a passive declare)."""
    control = await link.channel("control")
    ok = await control.queue_declare(queue, passive=True)
    return ok.consumer_count or 0


__all__ = [
    "LAST_VALUE_ARGUMENTS",
    "LEADER_ARGUMENTS",
    "BeatQueues",
    "consumers",
    "declare",
    "peek",
    "properties",
    "publish",
]
