"""Revokes on RabbitMQ: an append-only stream, ``celeriac.revokes``, read whole at start-up.

(The transport option ``revokes_stream`` names another, for apps sharing a vhost.)

RabbitMQ has no keys to look up, and a queue hands each message to one consumer; but a *stream*
(``x-queue-type: stream``, RabbitMQ 3.9+) is a log that any number of consumers read from an
offset without taking anything from it, and that trims itself by age. That is what revokes
need: writers append (many at once, no read-modify-write, nothing to lose in a race) and every
worker that starts reads everything still there.

* **Declared** durable with ``x-max-age`` (``worker_revoke_expires`` in seconds) and small
  segments (``x-stream-max-segment-size-bytes``: 1 MB), because a stream trims whole segments:
  with RabbitMQ's default of 500 MB nothing would ever age out. A stream declared earlier with
  another age (another ``worker_revoke_expires``) is used as it is; each entry carries its own
  expiry, which is what readers go by.
* **Written** as one persistent message per ``add`` (``{"revokes": [[key, expires_at], ...]}``),
  published with confirms, so a revoke is on disk when ``app.control.revoke`` returns.
* **Read** (:meth:`AmqpRevokeStore.live`): a consumer from the first offset (the stream only
  holds what its age allows), acking as it goes, until it meets a marker it appended itself just
  before: AMQP 0-9-1 says nothing when a consumer reaches a stream's end, but everything
  appended before the marker comes before it. Expired entries are skipped, a key seen twice
  keeps its later expiry.

The connection is the broker URL's (credentials, TLS, failover) through
:func:`~celeriac.transports.amqp.url.connect_first`; a store belongs to the loop that opened it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from celeriac.control.revokes import DEFAULT_EXPIRES, Revoke, RevokeStore
from celeriac.errors import TransportError
from celeriac.protocol.message import Message
from celeriac.transports.amqp.codec import properties_for
from celeriac.transports.amqp.link import Link, on_close
from celeriac.transports.amqp.url import connect_first, parse_amqp_urls

if TYPE_CHECKING:
    from aiormq.abc import DeliveredMessage

logger = logging.getLogger("celeriac.control")

QUEUE = "celeriac.revokes"
SEGMENT_BYTES = 1_000_000
#: How long a read may take before it gives up (a stream of a few MB reads in well under it).
READ_TIMEOUT = 30.0
PREFETCH = 1000


def stream_arguments(expires: float) -> dict[str, Any]:
    return {
        "x-queue-type": "stream",
        "x-max-age": f"{max(1, math.ceil(expires))}s",
        "x-stream-max-segment-size-bytes": SEGMENT_BYTES,
    }


class AmqpRevokeStore(RevokeStore):
    def __init__(self, url: str, options: dict[str, Any], expires: float = DEFAULT_EXPIRES) -> None:
        self.targets = parse_amqp_urls(url, options)  # a bad URL fails here, named
        self.queue = str(options.get("revokes_stream") or QUEUE)
        self.arguments = stream_arguments(expires)
        self._link: Link | None = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> Link:
        link = self._link
        if link is not None and not link.broken:
            return link
        connection = await connect_first(self.targets)
        link = Link(connection, 0)
        connection.close_callbacks.add(on_close(link))
        try:
            await self._declare(link)
        except BaseException:
            await link.close(timeout=2.0)
            raise
        self._link = link
        return link

    async def _declare(self, link: Link) -> None:
        channel = await link.channel("control")
        try:
            await channel.queue_declare(self.queue, durable=True, arguments=self.arguments)
        except Exception as exc:  # declared before with another age: use it as it is
            logger.info(
                "revokes stream %s: declared already with other arguments (%s)", self.queue, exc
            )
            channel = await link.channel("control")
            await channel.queue_declare(self.queue, passive=True)

    async def open(self) -> None:
        async with self._lock, self._errors("connecting"):
            await self._connect()

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            with contextlib.suppress(Exception):
                await link.close(timeout=2.0)

    @contextlib.asynccontextmanager
    async def _errors(self, action: str) -> Any:
        try:
            yield
        except TransportError:
            raise
        except (TimeoutError, OSError) as exc:
            raise TransportError(f"RabbitMQ revokes stream: {action} failed: {exc!r}") from exc
        except Exception as exc:  # the AMQP client's own errors (channel or connection closed)
            if type(exc).__module__.startswith(("aiormq", "aio_pika", "pamqp")):
                raise TransportError(f"RabbitMQ revokes stream: {action} failed: {exc!r}") from exc
            raise

    async def _append(self, link: Link, document: dict[str, Any]) -> None:
        channel = await link.channel("publish")
        message = Message(headers={}, body=orjson.dumps(document), properties={})
        await channel.basic_publish(
            message.body, exchange="", routing_key=self.queue, properties=properties_for(message)
        )

    async def add(self, revokes: Sequence[Revoke]) -> None:
        if not revokes:
            return
        document = {"revokes": [[r.key, r.expires_at] for r in revokes]}
        async with self._lock, self._errors("storing revokes"):
            await self._append(await self._connect(), document)

    async def live(self, limit: int) -> list[Revoke]:
        async with self._lock, self._errors("reading revokes"):
            link = await self._connect()
            marker = uuid.uuid4().hex
            await self._append(link, {"marker": marker})
            expiry = await self._read_until(link, marker)
        now = time.time()
        alive = sorted(((at, key) for key, at in expiry.items() if at > now), reverse=True)
        return [Revoke.from_key(key, at) for at, key in alive[:limit]]

    async def _read_until(self, link: Link, marker: str) -> dict[str, float]:
        """Every entry of the stream up to ``marker``: key -> its latest expiry."""
        channel = await link.channel("revokes-read")
        expiry: dict[str, float] = {}
        reached = asyncio.Event()

        async def on_message(message: DeliveredMessage) -> None:
            tag = int(getattr(message.delivery, "delivery_tag", 0) or 0)
            if not reached.is_set():
                _collect(bytes(message.body), marker, expiry, reached)
            if tag:
                await channel.basic_ack(tag, wait=False)

        ok = None
        try:
            await channel.basic_qos(prefetch_count=PREFETCH)
            ok = await channel.basic_consume(
                self.queue, on_message, no_ack=False, arguments={"x-stream-offset": "first"}
            )
            try:
                await asyncio.wait_for(reached.wait(), READ_TIMEOUT)
            except TimeoutError:
                raise TransportError(
                    f"RabbitMQ revokes stream: not read to its end within {READ_TIMEOUT:g}s"
                ) from None
        finally:
            if ok is not None:
                with contextlib.suppress(Exception):
                    await channel.basic_cancel(str(ok.consumer_tag))
        return expiry


def _collect(body: bytes, marker: str, expiry: dict[str, float], reached: asyncio.Event) -> None:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if not isinstance(document, dict):
        return
    if document.get("marker") == marker:
        reached.set()
        return
    for item in document.get("revokes") or ():
        try:
            key, at = str(item[0]), float(item[1])
        except (TypeError, ValueError, IndexError):
            continue
        if at > expiry.get(key, 0.0):
            expiry[key] = at
