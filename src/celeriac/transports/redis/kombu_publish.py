"""What a publish in kombu's layout sends: each message in kombu's envelope, and the arguments of
the ``PUBLISH`` script (:mod:`~celeriac.transports.redis.kombu_scripts`), a thousand messages
(or 4 MB) per call.

Per message the script gets two values: a head (the number of the message's route in the
call's route table, plus ``:<due>:<tag>`` for a message with a due time) and its envelope. The
route table lists each distinct ``(exchange, routing key, priority list suffix)`` once, so a
batch of one task to one queue carries its routing once, not per message. A batch's calls carry
an idempotency token each (its first and last ids and its size): a call sent again after its
reply was lost stores nothing twice and answers the counts it answered the first time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from celeriac.errors import TransportError
from celeriac.transports.base import Outgoing
from celeriac.transports.redis.kombu_layout import (
    KombuNames,
    Tags,
    delivery_info,
    publish_envelope,
)
from celeriac.transports.redis.scripts import CHUNK_BYTES, CHUNK_COPIES
from celeriac.transports.topology import message_priority

Route = tuple[str, str, str]  # exchange, routing key, priority list suffix
Row = tuple[Route, str, bytes]  # route, ":<due>:<tag>" or "", envelope


def publish_calls(
    items: Sequence[Outgoing],
    names: KombuNames,
    channel_prefix: str,
    timeout: float,
    tags: Tags,
) -> list[tuple[Any, ...]]:
    """The script's argument lists for ``items``; every envelope is made first, so a bad one
    refuses the batch before anything is sent."""
    infos: dict[tuple[str, str], bytes] = {}
    suffixes: dict[int, str] = {}
    rows: list[Row] = []
    for item in items:
        exchange, key = item.exchange, item.routing_key
        info = infos.get((exchange, key))
        if info is None:
            if "\0" in exchange:
                raise TransportError("exchange names may not contain NUL characters")
            info = infos[(exchange, key)] = delivery_info(exchange, key)
        priority = message_priority(item.message)
        suffix = suffixes.get(priority)
        if suffix is None:
            suffix = suffixes[priority] = names.suffix(priority)
        tag = tags.next()
        envelope = publish_envelope(item.envelope(), info, tag)
        due = "" if item.due_at is None else f":{float(item.due_at)!r}:{tag}"
        rows.append(((exchange, key, suffix), due, envelope))
    fixed = (names.own, names.glob, timeout)
    keys = (channel_prefix, names.unacked, names.unacked_index)
    calls: list[tuple[Any, ...]] = []
    start = 0
    while start < len(rows):
        end, size = start, 0
        while end < len(rows) and end - start < CHUNK_COPIES and size <= CHUNK_BYTES:
            size += len(rows[end][2])
            end += 1
        token = ""
        if len(items) > 1:
            token = f"{items[start].message.id}:{items[end - 1].message.id}:{end - start}"
        calls.append((*fixed, token, *keys, *_body(items, rows, start, end)))
        start = end
    return calls


def _body(items: Sequence[Outgoing], rows: list[Row], start: int, end: int) -> list[Any]:
    """The route table, the heads and envelopes, and the dedup records of one call."""
    routes: dict[Route, int] = {}
    heads: list[Any] = []
    dedup: list[Any] = []
    for ordinal, at in enumerate(range(start, end)):
        route, due, envelope = rows[at]
        number = routes.get(route)
        if number is None:
            number = routes[route] = len(routes) + 1
        heads += (f"{number}{due}", envelope)
        item = items[at]
        if item.dedup_key is not None and item.dedup_ttl > 0:
            dedup += (ordinal, item.dedup_key, max(1, math.ceil(item.dedup_ttl * 1000)))
    body: list[Any] = [len(routes)]
    for route in routes:
        body += route
    body.append(end - start)
    body += heads
    if dedup:
        body += (len(dedup) // 3, *dedup)
    return body


def counts(replies: Sequence[Any]) -> list[int]:
    """How many queues (or subscribers) each message reached, from the script's replies; an
    exchange nobody declared raises, naming it."""
    found: list[int] = []
    for reply in replies:
        if reply and reply[0] == -1:
            name = bytes(reply[1]).decode(errors="replace")
            raise TransportError(
                f"exchange {name!r} is not declared: declare it (or a queue bound to it) first"
            )
        found += (int(count) for count in reply)
    return found


__all__ = ["counts", "publish_calls"]
