"""Task messages to AMQP frames and back, in the layout Celery's workers and clients use.

On RabbitMQ a protocol v2 message is not a JSON envelope: kombu sends the task headers as the
AMQP ``headers`` table, the serialized ``(args, kwargs, embed)`` as the raw body, and
``content_type``, ``content_encoding``, ``correlation_id``, ``reply_to``, ``priority`` and
``delivery_mode`` as native properties. Doing the same lets a Celery worker run what celeriac
sends on the same broker and the reverse, and lets RabbitMQ see priorities and persistence.

Headers the broker or this transport add for its own book-keeping (``x-death`` from
dead-lettering, ``x-delivery-count`` from quorum queues, ``x-celeriac-*``) are kept out of the
:class:`~celeriac.protocol.message.Message` a worker sees, so a message that went through a
delay queue is the message that was sent.

**Delivery count.** ``x-celeriac-deliveries`` says how many times the message was delivered
before this copy was published; ``x-celeriac-lost`` how many of those deliveries were lost (the
channel holding them closed without a settle: a worker died). The transport publishes a new copy
with both raised instead of trusting RabbitMQ's redelivery, which for classic queues is one bit
(``redelivered``) and so cannot count past one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from celeriac.errors import DecodeError
from celeriac.protocol.message import Message

DELIVERIES = "x-celeriac-deliveries"
LOST = "x-celeriac-lost"
REASON = "x-celeriac-reason"
FAILED_AT = "x-celeriac-failed-at"
QUORUM_COUNT = "x-delivery-count"
_INTERNAL_PREFIXES = ("x-celeriac-", "x-death", "x-first-death", "x-last-death")
_INTERNAL = frozenset({QUORUM_COUNT})
#: Message properties that map onto AMQP basic properties, in kombu's order.
_PROPERTIES = ("correlation_id", "delivery_mode", "priority", "reply_to")


def is_internal(header: str) -> bool:
    """True for headers the broker or this transport keep for themselves."""
    return header in _INTERNAL or header.startswith(_INTERNAL_PREFIXES)


def properties_for(message: Message, extra: Mapping[str, Any] | None = None) -> Basic.Properties:
    """The AMQP properties of ``message`` (persistent unless it says otherwise)."""
    props = message.properties
    headers = dict(message.headers)
    if extra:
        headers.update(extra)
    priority = props.get("priority")
    return Basic.Properties(
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        headers=headers,
        delivery_mode=int(props.get("delivery_mode") or 2),
        priority=int(priority) if priority is not None else None,
        correlation_id=_str_or_none(props.get("correlation_id")),
        reply_to=_str_or_none(props.get("reply_to")),
    )


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def copy_properties(raw: DeliveredMessage, changes: Mapping[str, Any]) -> Basic.Properties:
    """The properties of a received message with some headers changed (for a republish)."""
    src = raw.header.properties
    headers = {
        k: v
        for k, v in (src.headers or {}).items()
        if not is_internal(k) or k.startswith("x-celeriac-")
    }
    headers.update(changes)
    return Basic.Properties(
        content_type=src.content_type,
        content_encoding=src.content_encoding,
        headers=headers,
        delivery_mode=src.delivery_mode or 2,
        priority=src.priority,
        correlation_id=src.correlation_id,
        reply_to=src.reply_to,
        expiration=None,
        message_id=None,
        timestamp=src.timestamp,
        message_type=src.message_type,
        user_id=src.user_id,
        app_id=src.app_id,
    )


def message_of(raw: DeliveredMessage) -> Message | None:
    """The task message in a delivery, or ``None`` when it is not one (no ``task``/``id``)."""
    props = raw.header.properties
    table = props.headers or {}
    if "task" not in table or "id" not in table:
        return None
    headers = {k: v for k, v in table.items() if not is_internal(k)}
    properties: dict[str, Any] = {}
    for name in _PROPERTIES:
        value = getattr(props, name, None)
        if value is not None:
            properties[name] = value
    return Message(
        headers=headers,
        body=bytes(raw.body),
        content_type=props.content_type or "application/json",
        content_encoding=props.content_encoding or "utf-8",
        properties=properties,
    )


def payload_of(raw: DeliveredMessage, message: Message | None) -> bytes:
    """The bytes a :class:`~celeriac.transports.base.Delivery` carries: the kombu envelope of a
    task message (what the other transports store), or the raw body of anything else."""
    if message is None:
        return bytes(raw.body)
    try:
        return message.to_wire()
    except DecodeError:
        return bytes(raw.body)


@dataclass(frozen=True, slots=True)
class Counts:
    """Where a received message stands: deliveries so far (this one included) and losses."""

    delivery_count: int
    lost: int
    #: True when RabbitMQ says an earlier delivery of this very copy was lost.
    redelivered: bool


def tag_of(raw: DeliveredMessage) -> int:
    """The delivery tag of a pushed (``basic.deliver``) or pulled (``basic.get-ok``) message."""
    return int(getattr(raw.delivery, "delivery_tag", 0) or 0)


def _int(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def counts_of(raw: DeliveredMessage) -> Counts:
    """This delivery's counts from our headers and RabbitMQ's redelivery information.

    A quorum queue counts the returns of this copy in ``x-delivery-count``; a classic queue only
    says ``redelivered`` (at least one). Either way those deliveries were lost, not settled.
    """
    headers = raw.header.properties.headers or {}
    before = _int(headers.get(DELIVERIES))
    lost = _int(headers.get(LOST))
    returned = _int(headers.get(QUORUM_COUNT))
    redelivered = bool(getattr(raw.delivery, "redelivered", False))
    if redelivered and not returned:
        returned = 1
    return Counts(before + returned + 1, lost + returned, returned > 0)


def dead_letter_fields(raw: DeliveredMessage) -> tuple[str, int, float]:
    """The reason, delivery count and time recorded on a dead-lettered message."""
    headers = raw.header.properties.headers or {}
    reason = headers.get(REASON)
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    failed_at = headers.get(FAILED_AT)
    try:
        when = float(str(failed_at)) if failed_at is not None else 0.0
    except ValueError:
        when = 0.0
    return str(reason or ""), max(1, _int(headers.get(DELIVERIES))), when


def rejection_headers(counts: Counts, reason: str) -> dict[str, Any]:
    """The headers a dead-lettered copy carries: why, when, and how often it was delivered."""
    return {
        REASON: reason,
        FAILED_AT: time.time(),
        DELIVERIES: counts.delivery_count,
        LOST: counts.lost,
    }
