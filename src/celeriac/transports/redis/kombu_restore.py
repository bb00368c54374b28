"""Restoring a dead consumer's messages (celeriac's or Celery's) as kombu's ``restore_visible``.

The claim script finds the records of ``unacked`` older than ``visibility_timeout`` and hands
them here: each is ``[envelope, exchange, routing key]``, as kombu writes it (celeriac writes
``""`` and the queue the message came from, so it goes back there and nowhere else). Like
kombu's ``_do_restore_message``, the envelope is marked ``redelivered`` (in its headers and in
``delivery_info``), its deliveries are counted (:data:`~.kombu_layout.COUNT_PROPERTY`), and it
is pushed first in line (``RPUSH``) to the priority list of each queue the exchange routes the
key to. Unlike kombu, a record that cannot be read, or whose exchange routes it nowhere, goes to
celeriac's dead letters rather than being lost (kombu logs it and drops it, or its restore fails).

The rewrite is Python's ``json``, as kombu's; the move is one script call (``RESTORE``) that
restores a record only if it is still the one read and still expired, so two consumers
restoring at once (or a Celery worker's restore racing this one) restore it once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson

from celeriac.transports.redis import kombu_topology as topology
from celeriac.transports.redis.kombu_layout import (
    KombuNames,
    envelope_priority,
    previous_deliveries,
    restored_envelope,
)

logger = logging.getLogger(__name__)


def _read(value: bytes) -> tuple[dict[str, Any], str, str] | None:
    try:
        record = json.loads(value)
    except ValueError:
        return None
    if (
        isinstance(record, list)
        and len(record) == 3
        and isinstance(record[0], dict)
        and isinstance(record[1], str)
        and isinstance(record[2], str)
    ):
        return record[0], record[1], record[2]
    return None


def dead_entry(reason: str, delivery_count: int, message_id: str, payload: bytes) -> bytes:
    """A dead-letter list entry: a JSON header line, then the payload (the native layout's)."""
    header = {
        "reason": reason,
        "delivery_count": delivery_count,
        "failed_at": f"{time.time():.6f}",
        "message_id": message_id,
    }
    return orjson.dumps(header) + b"\n" + payload


async def restore(
    client: Any, script: Any, names: KombuNames, timeout: float, expired: Sequence[Any]
) -> int:
    """Restore ``expired`` (``field, record`` pairs from the claim script); how many were."""
    pairs = [(bytes(expired[i]), bytes(expired[i + 1])) for i in range(0, len(expired), 2)]
    read = [(field, value, _read(value)) for field, value in pairs]
    exchanges = sorted({found[1] for _, _, found in read if found is not None and found[1]})
    tables = await topology.routes(client, names, exchanges)
    args: list[Any] = [names.glob, names.unacked, names.unacked_index, timeout]
    for field, value, found in read:
        tag = field.decode(errors="replace")
        if found is None:
            logger.error("unreadable record %r in %s: dead-lettered", tag, names.unacked)
            entry = dead_entry("unreadable unacked record", 0, tag, value)
            args += (field, value, "dead", 1, names.dlq(""), entry)
            continue
        envelope, exchange, routing_key = found
        if not exchange:
            queues = [routing_key] if routing_key else []
        else:
            kind, members = tables[exchange]
            queues = topology.lookup(kind, members, routing_key)
        if not queues:
            logger.error(
                "restored message %r routes nowhere (exchange %r, key %r): dead-lettered",
                tag,
                exchange,
                routing_key,
            )
            count = previous_deliveries(envelope) + 1
            entry = dead_entry("restored, but routed to no queue", count, tag, value)
            args += (field, value, "dead", 1, names.dlq(routing_key or exchange), entry)
            continue
        suffix = names.suffix(envelope_priority(envelope))
        payload = restored_envelope(envelope)
        args += (field, value, "push", len(queues), *(names.glob + q + suffix for q in queues))
        args.append(payload)
    restored = int(await script(args=args, client=client))
    if restored:
        logger.info("restored %d unacked message(s) whose visibility timeout ran out", restored)
    return restored


__all__ = ["dead_entry", "restore"]
