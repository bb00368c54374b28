"""Transient fan-out on Redis: PUBLISH and PSUBSCRIBE on kombu's channel names, nothing stored.

**Channels** are kombu's (``kombu/transport/redis.py``, ``_get_publish_topic``), so that Celery's
tools and celeriac's workers hear each other: ``<global_keyprefix><fanout prefix><exchange>``,
plus ``/<routing key>`` when the key is not empty. The fanout prefix is ``/{db}.`` (pub/sub
channels are per server, not per database, so kombu puts the database in the name); the
transport options ``fanout_prefix`` (False: none, a string: that, formatted with ``{db}``) and
``global_keyprefix`` are kombu's. A Celery worker's mailbox is ``/0.celery.pidbox``; events go
to ``/0.celeryev/worker.heartbeat``, where Flower's ``PSUBSCRIBE /0.celeryev/*`` finds them.
celeriac's own ``key_prefix`` does not apply: it names stored keys, and this stores none.

**Publishing** is one ``PUBLISH`` per message, each in kombu's JSON envelope
(:func:`celeriac.transports.transient.envelope`), a batch's sent by one script call per
thousand. Redis hands it to the subscribers connected now; with none it is gone, and no key is
ever written.

A *direct* exchange is the exception: kombu routes it through lists, and so does
:mod:`celeriac.transports.redis.direct`.

**A listener** is one subscriber connection of its own. Its patterns become the fewest Redis
globs that cover them: a topic pattern's literal words up to its first wildcard, then ``*``
(``task.*`` and ``task.#`` are both ``<base>/task*``), each glob escaped; globs that another
covers are left out, so Redis never sends one message twice to a listener. What the globs let
through too broadly (``<base>/tasks``) is filtered on arrival with AMQP's topic rules on the
routing key read back from the channel. A fanout listener takes ``<base>`` and ``<base>/*``:
everything published to its exchange, whatever the key.

The connection (named ``celeriac-listener-<hex>`` in ``CLIENT LIST``) is read by a task of the
listener's event loop into its bounded inbox (the oldest dropped and counted past ``buffer``). A
silent connection is probed with ``PING`` every :data:`PROBE` seconds; a broken one is reopened
with back-off (0.1 s doubling to 5 s) and subscribed again, messages published meanwhile being
lost, as they are for any listener that is not there. It speaks RESP2, where a published message
is a plain reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis

from celeriac.errors import ImproperlyConfigured
from celeriac.protocol.message import Message
from celeriac.routing import Exchange
from celeriac.transports.transient import InboxListener, backoff, envelope

if TYPE_CHECKING:
    from celeriac.transports.redis.transport import RedisTransport

logger = logging.getLogger(__name__)

#: Seconds of silence after which a subscriber connection is probed with PING; no answer within
#: as long again and it is taken for dead.
PROBE = 15.0
_CHUNK = 1000  # envelopes per script call
_GLOB_SPECIAL = frozenset("\\*?[]")


def fanout_prefix(option: Any, db: int) -> str:
    """kombu's fanout prefix for the ``fanout_prefix`` option (True by default: ``/{db}.``)."""
    if option is None or option is True:
        template = "/{db}."
    elif option is False or str(option).strip().lower() in ("false", "0", "no", "off", ""):
        template = ""
    elif str(option).strip().lower() in ("true", "1", "yes", "on"):
        template = "/{db}."
    else:
        template = str(option)
    try:
        return template.format(db=db)
    except (KeyError, IndexError, ValueError) as exc:
        raise ImproperlyConfigured(
            f"broker_transport_options 'fanout_prefix' {option!r}: {exc!r} (only {{db}} is known)"
        ) from None


def _escape(text: str) -> str:
    """``text`` as a Redis glob that matches only itself."""
    return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in text)


class Channels:
    """Channel names and subscription globs under one prefix (see the module docstring)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def base(self, exchange: str) -> str:
        return self.prefix + exchange

    def publish(self, exchange: str, routing_key: str) -> str:
        """Where a message published to ``exchange`` with ``routing_key`` goes."""
        base = self.prefix + exchange
        return f"{base}/{routing_key}" if routing_key else base

    def globs(self, exchange: Exchange, patterns: Sequence[str]) -> list[str]:
        """The PSUBSCRIBE globs of a listener: disjoint, and covering what it takes."""
        base = self.prefix + exchange.name
        exact: set[str] = set()
        prefixes: set[str] = set()
        if exchange.type in ("fanout", "headers"):
            exact.add(base)
            prefixes.add(base + "/")
        else:
            for pattern in patterns:
                words = pattern.split(".") if pattern else []
                wild = [i for i, w in enumerate(words) if w in ("*", "#")]
                if not wild:
                    exact.add(f"{base}/{pattern}" if pattern else base)
                    continue
                literal = ".".join(words[: wild[0]])
                prefixes.add(f"{base}/{literal}")
                if all(w == "#" for w in words):  # it matches the empty key: no "/" at all
                    exact.add(base)
        # a prefix inside another, or an exact name a prefix covers, would be delivered twice
        kept = {p for p in prefixes if not any(o != p and p.startswith(o) for o in prefixes)}
        names = {e for e in exact if not any(e.startswith(p) for p in kept)}
        return sorted(_escape(e) for e in names) + sorted(_escape(p) + "*" for p in kept)

    def routing_key(self, exchange: str, channel: str) -> str | None:
        """The routing key a message on ``channel`` was published with, or None when the
        channel is not ``exchange``'s (a glob let a neighbour through)."""
        base = self.prefix + exchange
        if channel == base:
            return ""
        if channel.startswith(base + "/"):
            return channel[len(base) + 1 :]
        return None


#: ARGV: channel, envelopes... -> how many deliveries (subscribers times messages).
PUBLISH_ALL = """
local heard = 0
for i = 2, #ARGV do
  heard = heard + redis.call('PUBLISH', ARGV[1], ARGV[i])
end
return heard
"""


async def publish(script: Any, channel: str, wires: Sequence[bytes]) -> None:
    """PUBLISH each envelope to ``channel``: one script call per chunk, so a batch costs a
    round trip per :data:`_CHUNK` messages rather than a command each."""
    for start in range(0, len(wires), _CHUNK):
        await script(args=[channel, *wires[start : start + _CHUNK]])


class RedisListener(InboxListener[bytes]):
    """One subscriber connection (see the module docstring)."""

    def __init__(
        self,
        transport: RedisTransport,
        exchange: Exchange,
        patterns: Sequence[str],
        buffer: int,
    ) -> None:
        super().__init__(exchange, patterns, buffer)
        self.transport = transport
        self.globs = transport.channels.globs(exchange, self.patterns)
        #: The connection's name in ``CLIENT LIST``, to tell listeners apart on the server.
        self.client_name = f"celeriac-listener-{uuid.uuid4().hex[:12]}"
        self._client: Any = None
        self._conn: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        if self._reader is not None:
            return
        self._client = self.transport.subscriber_client(self.client_name)
        with self.transport.errors("subscribing"):
            try:
                self._conn = await self._subscribe()
            except BaseException:
                await self._release()
                raise
        self._loop = asyncio.get_running_loop()
        self._reader = self._loop.create_task(self._read_loop())
        self.transport.opened(self)

    async def _subscribe(self) -> Any:
        """A connection subscribed to every glob (the confirmations read)."""
        conn = await self._client.connection_pool.get_connection()
        try:
            await conn.send_command("PSUBSCRIBE", *self.globs)
            confirmed = 0
            while confirmed < len(self.globs):
                reply = await conn.read_response(timeout=PROBE)
                if reply is None:
                    raise redis.TimeoutError("no confirmation of PSUBSCRIBE")
                if reply[0] == b"psubscribe":
                    confirmed += 1
                else:
                    self._deliver(reply)
        except BaseException:
            await conn.disconnect()
            raise
        return conn

    def _deliver(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) != 4 or reply[0] != b"pmessage":
            return  # a pong, or a confirmation
        key = self.transport.channels.routing_key(self.exchange.name, reply[2].decode())
        if key is not None and self.accepts(key):
            self.inbox.put(bytes(reply[3]))

    async def _read_loop(self) -> None:
        pause, probing, outage = 0.0, False, False
        while True:
            try:
                if self._conn is None:
                    self._conn = await self._subscribe()
                    if outage:
                        logger.warning("listener on %r subscribed again", self.exchange.name)
                    pause, outage = 0.0, False
                reply = await self._conn.read_response(timeout=PROBE)
                if reply is None:
                    if probing:
                        raise redis.TimeoutError(f"no answer to PING in {PROBE} s")
                    await self._conn.send_command("PING")
                    probing = True
                    continue
                probing = False
                self._deliver(reply)
            except (redis.RedisError, OSError) as exc:
                if not outage:
                    logger.warning(
                        "listener on %r lost its Redis connection (%s); subscribing again",
                        self.exchange.name,
                        exc,
                    )
                outage, probing = True, False
                if self._conn is not None:
                    with contextlib.suppress(Exception):
                        await self._conn.disconnect()
                    self._conn = None
                pause = backoff(pause, 0.1, 5.0)
                await asyncio.sleep(pause)  # back-off before reconnecting

    async def close(self) -> None:
        """Stop reading and drop the connection (its subscriptions go with it)."""
        self.inbox.close()
        reader, self._reader = self._reader, None
        if reader is None:
            return
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await self._release()
        elif self._loop is not None and not self._loop.is_closed():
            # the reader's loop owns the connection: it is let go there
            self._loop.call_soon_threadsafe(reader.cancel)
            asyncio.run_coroutine_threadsafe(self._release(), self._loop)
        self.transport.closed(self)

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        client, self._client = self._client, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()


def envelopes(exchange: str, routing_key: str, messages: Sequence[Message]) -> list[bytes]:
    return [envelope(message, exchange, routing_key) for message in messages]


__all__ = ["PROBE", "Channels", "RedisListener", "envelopes", "fanout_prefix", "publish"]
