"""A publish retried by ``task_publish_retry_policy`` (Celery's setting and its keys): the one
loop that the producer's sync sends, its async sends and its pipelined window all go through,
so that a broker error meets the same retries whichever way a message was sent."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from celeriac.errors import TransportError

logger = logging.getLogger("celeriac.app.producer")
T = TypeVar("T")

#: (max_retries, interval_start, interval_step, interval_max)
Policy = tuple[int, float, float, float]


def policy_of(conf: Any) -> Policy:
    """The app's retry policy; no retry at all with ``task_publish_retry = False``."""
    if not conf.task_publish_retry:
        return 0, 0.0, 0.0, 0.0
    policy = conf.task_publish_retry_policy
    return (
        int(policy.get("max_retries", 3)),
        float(policy.get("interval_start", 0.0)),
        float(policy.get("interval_step", 0.2)),
        float(policy.get("interval_max", 0.2)),
    )


def _next_delay(policy: Policy, attempt: int, exc: TransportError) -> float:
    """The wait before retry ``attempt + 1``; re-raises ``exc`` when the retries are spent."""
    max_retries, start, step, cap = policy
    if attempt >= max_retries:
        raise exc
    delay = min(cap, start + step * attempt)
    logger.warning("publish failed (%s); retry %d in %.2fs", exc, attempt + 1, delay)
    return delay


def call(policy: Policy, action: Callable[[], T]) -> T:
    """``action()``, retried on :class:`TransportError` by ``policy`` (sleeping between)."""
    attempt = 0
    while True:
        try:
            return action()
        except TransportError as exc:
            time.sleep(_next_delay(policy, attempt, exc))
            attempt += 1


async def acall(
    policy: Policy, action: Callable[[], Awaitable[T]], failed: TransportError | None = None
) -> T:
    """``await action()``, retried on :class:`TransportError` by ``policy``; ``failed``: the
    first attempt's error, when that attempt was made elsewhere (a send written from a loop
    callback, :mod:`celeriac.app.pipeline`): the retries go on from there."""
    attempt = 0
    if failed is not None:
        await asyncio.sleep(_next_delay(policy, 0, failed))
        attempt = 1
    while True:
        try:
            return await action()
        except TransportError as exc:
            await asyncio.sleep(_next_delay(policy, attempt, exc))
            attempt += 1


__all__ = ["Policy", "acall", "call", "policy_of"]
