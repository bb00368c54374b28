"""From a delivered message to a :class:`~celeriac.context.Request`: the worker's pre-checks.

Only headers are read to decide whether a message may run at all (known task, not expired, not
revoked, due); the body is decoded once, right before the task is handed to the pool.
"""

from __future__ import annotations

from typing import Any

from celeriac.context import Request
from celeriac.protocol.message import Message
from celeriac.transports.base import Delivery


def build_request(
    message: Message,
    delivery: Delivery,
    args: list[Any],
    kwargs: dict[str, Any],
    embed: dict[str, Any],
    hostname: str,
) -> Request:
    headers = message.headers
    timelimit = headers.get("timelimit") or (None, None)
    hard, soft = (
        [*timelimit, None, None][:2] if isinstance(timelimit, list | tuple) else [None, None]
    )
    return Request(
        id=message.id,
        task=message.task,
        args=tuple(args),
        kwargs=kwargs,
        retries=message.retries,
        eta=headers.get("eta"),
        expires=headers.get("expires"),
        root_id=headers.get("root_id"),
        parent_id=headers.get("parent_id"),
        group=headers.get("group"),
        hostname=hostname,
        delivery_info={
            "queue": delivery.queue,
            "priority": message.priority,
            "redelivered": delivery.redelivered,
        },
        reply_to=message.properties.get("reply_to"),
        correlation_id=message.properties.get("correlation_id"),
        callbacks=embed.get("callbacks"),
        errbacks=embed.get("errbacks"),
        chain=embed.get("chain"),
        chord=embed.get("chord"),
        headers=dict(headers),
        ignore_result=bool(headers.get("ignore_result", False)),
        delivery_count=delivery.delivery_count,
        timelimit=(hard, soft),
    )
