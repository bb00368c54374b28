"""An idle Redis consumer's wake-up that brings its work with it: ``BLPOP`` on the notify lists
and the claim script, sent in one write.

Why: a consumer woken by ``BLPOP`` used to send the claim script only then, a second round trip
(plus an event-loop turn on each side of it) between a message's arrival and its task starting;
on loopback that was about a fifth of a ``delay().get()`` round trip. Redis reads a blocked
client's next command as soon as the blocking one returns, so a claim queued behind the
``BLPOP`` runs the moment a publish (or the timeout) releases it, and both replies come back
together. A claim that follows a timed-out ``BLPOP`` is the one the consumer would have sent
next anyway: due delays and expired leases are swept just the same.

The wait goes on a :class:`~celeriac.transports.redis.link.Link` of its own (a blocked
connection answers nothing else), whose ``CLIENT ID`` was asked once when it opened, so that a
cancelled wait can be ended with ``CLIENT UNBLOCK`` from another connection: the ``BLPOP`` then
returns as if timed out, the claim still runs, and the caller gives back what it claimed.
Nothing is ever claimed and not returned to someone. All the replies come back to one future,
resolved by the link's reader, where redis-py's connection read them one by one (an event-loop
turn each). A wait that outlives its own timeout by the grace closes the link (a dead one).

Early acks ride the same write (``before``: a settle script call put ahead of the ``BLPOP``).
Redis runs it at once; its reply is read with the wait's when the wait ends (a refusal, such
as ``NOSCRIPT``, is settled again then): an idle worker's early ack costs no round trip, timer
or wake-up of its own (it used to wait 2 ms for company and then go alone, since on an idle
worker no company comes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import ResponseError

from celeriac.transports.redis.link import READ_ONLY, Link, read_only
from celeriac.transports.redis.resp import pack_command

__all__ = ["wait_then_claim"]


async def wait_then_claim(
    link: Link,
    notify: Sequence[str],
    seconds: float,
    script: Any,
    args: Sequence[Any],
    grace: float,
    before: tuple[Any, Sequence[Any]] | None = None,
) -> tuple[Any, Any]:
    """``BLPOP notify seconds`` then ``script(args)`` on ``link``; returns the script's reply,
    and the reply (or the error) of ``before = (script, args)``, run ahead of the ``BLPOP``
    when given (else ``None``). ``grace``: how long past ``seconds`` a silent server is taken
    for a dead link. A master that a failover made a replica (``READONLY``) closes the link
    and raises ``redis.ConnectionError``."""
    commands: list[tuple[Any, ...]] = []
    if before is not None:
        commands.append(("EVALSHA", before[0].sha, 0, *before[1]))
    commands += [("BLPOP", *notify, seconds), ("EVALSHA", script.sha, 0, *args)]
    packed = b"".join(pack_command(command) for command in commands)
    replies = await link.call(packed, len(commands), timeout=seconds + grace)
    if any(read_only(reply) for reply in replies):
        link.close()
        raise redis.ConnectionError(READ_ONLY)
    ahead = replies[0] if before is not None else None
    reply = replies[-1]
    if isinstance(reply, ResponseError):
        if not str(reply).startswith("NOSCRIPT"):
            raise reply
        reply = await script(args=list(args))  # Redis restarted: redis-py's Script loads it
    return reply, ahead
