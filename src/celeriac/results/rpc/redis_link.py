"""``rpc://`` over Redis: each process's replies in a Redis list, read by a thread of its own.

The same semantics as over RabbitMQ (:mod:`.link`), with Redis' means:

* **The reply queue** of a process is the list ``<key_prefix>reply:<queue name>`` on the
  broker's server (``key_prefix`` is the broker's, ``celeriac:`` by default). A worker sends a
  batch of replies as one pipeline: an ``RPUSH`` per reply, then an ``EXPIRE`` per list, of
  ``reply_queue_expires`` (300 s): a caller that died leaves its last replies behind for that
  long at most, and a caller that reconnects within it finds them.
* **The caller** reads its list in a thread of its own, blocked in ``BLPOP`` on a connection of
  its own: a reply wakes it at once, and nothing polls in between (the ``BLPOP`` gives up after
  :data:`BLPOP_SECONDS` only to be issued again, so a silently dead connection is noticed).
  Each reply goes to :class:`~celeriac.results.rpc.replies.Replies`, which wakes its waiters.
* **An entry** is ``<content type>\\n<content encoding>\\n<body>``; the body is the record in
  the result serializer, as over AMQP. Nothing else is needed: the record names its task.
* **Faults**: a dropped connection or a Redis restart makes the reader log once and reconnect
  with backoff; replies pushed meanwhile wait in the list. A send retries once at once on a
  broken pooled connection (redis-py's retry), then raises.
* **Close** wakes the reader (an empty entry), waits for it, and deletes the list.

The clients come from :mod:`celeriac.transports.redis.url`, the broker's own URL parser: every
URL form of the Redis broker (TLS, unix sockets, sentinels) works here too, and a password
never reaches a log or an error.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from celeriac.results.rpc.route import OnReply, Reply
from celeriac.transports.redis.url import (
    is_sentinel_url,
    parse_redis_url,
    parse_sentinel_url,
    sync_client,
)
from celeriac.utils.urls import redact_url

logger = logging.getLogger("celeriac.results.rpc")

__all__ = ["BLPOP_SECONDS", "RedisReplyLink", "check_redis_url", "reply_key"]

#: How long one ``BLPOP`` waits before it is issued again (a liveness check, not a poll).
BLPOP_SECONDS = 30.0
RECONNECT_MAX = 10.0
#: The broker options that are not connection options (the Redis transport reads them).
_NOT_CONNECTION = ("key_prefix", "retries", "lease_seconds", "max_deliveries")
DEFAULT_KEY_PREFIX = "celeriac:"
_WAKE = b""


def check_redis_url(url: str, options: Mapping[str, Any]) -> None:
    """Parse ``url`` now: a bad one fails as the backend is made (ImproperlyConfigured)."""
    connection = _connection_options(options)
    if is_sentinel_url(url):
        parse_sentinel_url(url, connection)
    else:
        parse_redis_url(url, connection)


def _connection_options(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in _NOT_CONNECTION}


def reply_key(options: Mapping[str, Any], queue_name: str) -> str:
    """The Redis list that holds the replies sent to ``queue_name``."""
    return f"{options.get('key_prefix', DEFAULT_KEY_PREFIX)}reply:{queue_name}"


def _entry(content_type: str, encoding: str, body: bytes) -> bytes:
    return b"%s\n%s\n%s" % (content_type.encode(), encoding.encode(), body)


class RedisReplyLink:
    """One process's reply list and its reader thread, plus the client that sends replies."""

    def __init__(
        self,
        url: str,
        options: Mapping[str, Any],
        queue_name: str,
        queue_expires: float,
        on_reply: OnReply,
    ) -> None:
        self.queue_name = queue_name
        self.display = redact_url(url)
        self._url = url
        self._options = dict(options)
        self._connection = _connection_options(options)
        self._key = reply_key(options, queue_name)
        self._expires = max(1, round(queue_expires))
        self._on_reply = on_reply
        self._lock = threading.Lock()
        self._client: Any = None
        self._reader: threading.Thread | None = None
        self._closing = threading.Event()

    def __repr__(self) -> str:
        return f"<RedisReplyLink {self.display} {self._key}>"

    def _sender(self) -> Any:
        """The client that sends replies (and wakes the reader at close): made on first use."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = sync_client(self._url, self._connection)
        return self._client

    # -- the caller's side ----------------------------------------------------------------------
    def start(self) -> None:
        """Check the server answers, then start the reader (idempotent; the backend calls it
        once per process, when its first send asks for ``reply_to``)."""
        with self._lock:
            if self._reader is not None:
                return
            # the reader's own connection: its reads wait up to BLPOP_SECONDS, so its socket
            # timeout must outlast them (a broker's socket_timeout would cut every BLPOP short);
            # named after the queue (unless the options name connections), so that CLIENT LIST
            # shows whose reader it is
            named = {"client_name": f"celeriac-rpc:{self.queue_name}", **self._connection}
            client = sync_client(self._url, named, socket_timeout=BLPOP_SECONDS + 10.0)
            try:
                client.ping()
            except Exception:
                client.close()
                raise
            reader = threading.Thread(
                target=self._read, args=(client,), name="celeriac-rpc-redis", daemon=True
            )
            reader.start()
            self._reader = reader

    def _read(self, client: Any) -> None:
        """The reader thread: BLPOP, hand over, again; reconnect with backoff on errors."""
        delay = 0.5
        failing = False
        try:
            while not self._closing.is_set():
                try:
                    popped = client.blpop([self._key], timeout=BLPOP_SECONDS)
                except Exception as exc:  # a dropped connection, a restart: try again
                    if self._closing.is_set():
                        return
                    if not failing:
                        logger.warning(
                            "rpc results: reading replies from %s failed (%s: %s); retrying",
                            self.display,
                            type(exc).__name__,
                            exc,
                        )
                        failing = True
                    self._closing.wait(delay)
                    delay = min(delay * 2, RECONNECT_MAX)
                    continue
                if failing:
                    logger.info("rpc results: reading replies from %s again", self.display)
                    failing, delay = False, 0.5
                if popped is not None:
                    self._deliver(popped[1])
        finally:
            client.close()

    def _deliver(self, entry: bytes) -> None:
        if entry == _WAKE:
            return  # close() woke the reader
        try:
            content_type, encoding, body = entry.split(b"\n", 2)
        except ValueError:
            logger.warning("rpc results: dropped a malformed reply (%d bytes)", len(entry))
            return
        try:
            self._on_reply(body, content_type.decode(), encoding.decode())
        except Exception:  # one bad reply must not stop the reader
            logger.exception("rpc results: could not handle a reply")

    # -- the worker's side ----------------------------------------------------------------------
    def send(self, replies: Sequence[Reply]) -> None:
        """Push each reply onto its caller's list and refresh the lists' expiry: one round
        trip for the batch."""
        if not replies:
            return
        pipe = self._sender().pipeline(transaction=False)
        keys: dict[str, None] = {}
        for reply_to, _task_id, content_type, encoding, body in replies:
            key = reply_key(self._options, reply_to)
            pipe.rpush(key, _entry(content_type, encoding, body))
            keys[key] = None
        for key in keys:
            pipe.expire(key, self._expires)
        pipe.execute()

    async def asend(self, replies: Sequence[Reply]) -> None:
        await asyncio.to_thread(self.send, replies)

    # -- shutdown -----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the reader (woken by an empty entry), delete the list, close the clients."""
        self._closing.set()
        reader, self._reader = self._reader, None
        try:
            if reader is not None:
                sender = self._sender()
                sender.rpush(self._key, _WAKE)
                reader.join(5.0)
                sender.delete(self._key)
        except Exception as exc:  # the list expires by itself anyway
            logger.debug("rpc results: could not delete %s: %s", self._key, exc)
        finally:
            client = self._client
            self._client = None
            if client is not None:
                client.close()
