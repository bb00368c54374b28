"""Delays on RabbitMQ: TTL queues that dead-letter into the target exchange when time is up.

RabbitMQ 3.10 has no scheduled delivery without a plugin, and a worker must never hold a delayed
message unacked (the broker closes a channel that holds a delivery past ``consumer_timeout``, 30
minutes by default, and a worker's death would redeliver it early). So a message due later is
published to a *delay exchange* ``celeriac.delay.<exchange>.<ttl_ms>`` (fanout, durable), bound
to a queue of the same name declared with

* ``x-message-ttl`` = ``ttl_ms``: every message in it expires after the same time, so the head
  always expires first (RabbitMQ only expires messages at the head of a queue);
* ``x-dead-letter-exchange`` = the target exchange (``""`` is the default exchange): an expired
  message is routed there *with its original routing key*, since it was published to the fanout
  delay exchange under that key, and reaches exactly the queues a direct publish would have;
* ``x-expires`` = ``ttl_ms`` + 10 minutes: an idle delay queue deletes itself, and its delay
  exchange (``auto_delete``) goes with its last binding. ``x-expires`` counts from the last
  declaration or consumer, not from the last publish, so the transport declares a delay queue
  again when its last declaration is older than :data:`REDECLARE_SECONDS`; a message published
  right after a declaration thus always expires into its target before its queue can, and
  neither can vanish while a link trusts its cached declaration (60 s is far below 10 minutes).

A requeue with a delay uses the default exchange with the queue's name as the routing key, so
it comes back to that queue only (a requeue must not fan out again).

**Grid.** One queue per distinct TTL would make a queue per millisecond for retries with jitter,
so TTLs snap to a grid of 1/64 of their power of two (at least 10 ms): at most 64 delay queues
per doubling of the delay, under 2,100 over the whole range. Grids up to a second round *up* (late
by at most that much; a message is never delivered before ``due_at`` at short delays); coarser
ones round *down* and the message gets an ``eta`` header, so the worker that receives it a few
minutes early sends it back for the rest (``Consumer._prepare`` re-delays a message whose eta is
more than half a second away), converging in two or three hops. A delay beyond the largest TTL
(2^32-1 ms less the expiry margin, about 49.7 days) is chained the same way.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

from aiormq.exceptions import ChannelPreconditionFailed
from pamqp.commands import Basic

from celeriac.protocol.message import format_time
from celeriac.transports.amqp.link import Link

MAX_TTL_MS = 2**32 - 1
MIN_GRID_MS = 10
ROUND_UP_UP_TO_MS = 1000
EXPIRES_MARGIN_MS = 600_000
REDECLARE_SECONDS = 60.0
#: The longest TTL used: the margin keeps x-expires within RabbitMQ's limit too.
LONGEST_MS = (MAX_TTL_MS - EXPIRES_MARGIN_MS) // 1000 * 1000
#: Delays shorter than this are published for immediate delivery (clock skew, rounding).
IMMEDIATE_MS = 5


def ttl_bucket(delay_seconds: float) -> tuple[int, bool]:
    """The TTL (ms) a message due in ``delay_seconds`` waits for, and whether that is exact
    enough (``False``: it arrives early and needs an ``eta`` header to be sent back)."""
    ms = delay_seconds * 1000.0
    if ms >= LONGEST_MS:
        return LONGEST_MS, False
    grid = max(MIN_GRID_MS, 2 ** math.floor(math.log2(max(ms, 1.0))) // 64)
    if grid <= ROUND_UP_UP_TO_MS:
        return int(math.ceil(ms / grid) * grid), True
    return int(ms // grid * grid), False


def delay_name(exchange: str, ttl_ms: int) -> str:
    """The delay exchange and queue for messages to ``exchange`` waiting ``ttl_ms``."""
    return f"celeriac.delay.{exchange or 'default'}.{ttl_ms}"


def delay_queue_arguments(exchange: str, ttl_ms: int) -> dict[str, Any]:
    """The arguments of a delay queue (see the module docstring for why each is there)."""
    return {
        "x-message-ttl": ttl_ms,
        "x-dead-letter-exchange": exchange,
        "x-expires": ttl_ms + EXPIRES_MARGIN_MS,
    }


async def ensure_delay(link: Link, exchange: str, ttl_ms: int) -> str:
    """Declare (or refresh, see ``x-expires``) the delay exchange and queue; returns the name."""
    name = delay_name(exchange, ttl_ms)
    declared = link.declared.get(name)
    if declared is not None and time.monotonic() - declared < REDECLARE_SECONDS:
        return name
    channel = await link.channel("control")
    try:
        await channel.exchange_declare(name, exchange_type="fanout", durable=True, auto_delete=True)
    except ChannelPreconditionFailed:  # declared otherwise by an older client: use it as it is
        channel = await link.channel("control")
        await channel.exchange_declare(name, passive=True)
    await channel.queue_declare(
        name, durable=True, arguments=delay_queue_arguments(exchange, ttl_ms)
    )
    await channel.queue_bind(name, name, routing_key="")
    link.declared[name] = time.monotonic()
    return name


async def route_delayed(link: Link, exchange: str, due_at: float, props: Basic.Properties) -> str:
    """The delay exchange for a message to ``exchange`` due at ``due_at``; adds an ``eta``
    header when the grid makes it arrive early, so the worker sends it back for the rest."""
    ttl_ms, exact = ttl_bucket(due_at - time.time())
    headers = props.headers if props.headers is not None else {}
    if not exact and not headers.get("eta"):
        headers["eta"] = format_time(datetime.fromtimestamp(due_at, UTC))
        props.headers = headers
    return await ensure_delay(link, exchange, ttl_ms)
