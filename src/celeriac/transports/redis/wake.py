"""An idle Redis consumer's wake-up that brings its work with it: ``BLPOP`` on the notify lists
and the claim script, sent in one write.

Why: a consumer woken by ``BLPOP`` used to send the claim script only then, a second round trip
(plus an event-loop turn on each side of it) between a message's arrival and its task starting;
on loopback that was about a fifth of a ``delay().get()`` round trip. Redis reads a blocked
client's next command as soon as the blocking one returns, so a claim queued behind the
``BLPOP`` runs the moment a publish (or the timeout) releases it, and both replies come back
together. A claim that follows a timed-out ``BLPOP`` is the one the consumer would have sent
next anyway: due delays and expired leases are swept just the same.

The write starts with ``CLIENT ID``, answered at once, so that a cancelled wait can be ended
with ``CLIENT UNBLOCK`` from another connection: the ``BLPOP`` then returns as if timed out, the
claim still runs, and the caller gives back what it claimed. Nothing is ever claimed and not
returned to someone. A connection whose replies were not all read (a dead link, an error midway)
is disconnected rather than handed back to the pool.

Early acks ride the same write (``before``: a settle script call put ahead of the ``BLPOP``).
Redis runs it at once, and its reply comes back with ``CLIENT ID``'s, which the consumer waits
for anyway: an idle worker's early ack costs no round trip, timer or wake-up of its own (it used
to wait 2 ms for company and then go alone, since on an idle worker no company comes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from celeriac.transports.redis.resp import pack_command

__all__ = ["blpop_then_claim"]


async def blpop_then_claim(
    pool: Any,
    notify: Sequence[str],
    seconds: float,
    script: Any,
    args: Sequence[Any],
    client_id: asyncio.Future[int],
    grace: float,
    retries: int = 1,
    before: tuple[Any, Sequence[Any]] | None = None,
) -> tuple[Any, Any]:
    """``BLPOP notify seconds`` then ``script(args)`` on one connection of ``pool``; returns the
    script's reply, and the reply (or the error) of ``before = (script, args)``, run ahead of
    the ``BLPOP`` when given (else ``None``). ``client_id`` receives the connection's id (see
    the module docstring); ``grace``: how long past ``seconds`` a silent server is taken for a
    dead link; ``retries``: how many times the write is sent again when the connection breaks
    before the first reply."""
    conn: Any = await pool.get_connection()
    clean = False
    reply: Any = None
    ahead: Any = None
    try:
        commands: list[tuple[Any, ...]] = [("CLIENT", "ID")]
        if before is not None:
            commands.append(("EVALSHA", before[0].sha, 0, *before[1]))
        commands += [("BLPOP", *notify, seconds), ("EVALSHA", script.sha, 0, *args)]
        # packed by hand (redis-py's packer runs an encoder call per argument) into one
        # buffer, one write (a list would be written item by item)
        packed = [b"".join(pack_command(command) for command in commands)]
        for attempt in range(retries + 1):
            try:
                await conn.send_packed_command(packed, check_health=False)
                ident = await conn.read_response()
                break
            except (RedisConnectionError, OSError):
                # a socket the server closed (a restart) fails here, before any reply: nothing
                # ran, so the write is sent again on a new connection
                await conn.disconnect()
                if attempt == retries:
                    raise
        if not client_id.done():
            client_id.set_result(int(ident))
        if before is not None:
            try:
                ahead = await conn.read_response()
            except ResponseError as exc:  # NOSCRIPT or a refusal: the caller settles anew
                ahead = exc
        async with asyncio.timeout(seconds + grace):  # a silent link is a dead one
            await conn.read_response()  # the BLPOP: a token, or nil at the timeout
            try:
                reply = await conn.read_response()
            except NoScriptError:  # Redis restarted and forgot it: loaded below
                reply = None
        clean = True
    finally:
        if not client_id.done():
            client_id.cancel()
        if not clean:
            await conn.disconnect()
        await pool.release(conn)
    if reply is None:
        reply = await script(args=list(args))  # redis-py's Script loads it on NOSCRIPT
    return reply, ahead
