"""A result backend on Redis: records that expire natively, and waits that wake on PUBLISH.

Layout (``key_prefix`` defaults to ``celeriac:``)::

    {prefix}result:{task_id}         the encoded record; SET ... PX when result_expires is set
    {prefix}result-ready:{task_id}   the channel each store PUBLISHes on, in the same MULTI
    {prefix}counter:{key}            incr(): INCRBY + PEXPIRE (or PERSIST) in one MULTI

Waiting never polls. A sync ``wait_for`` writes its SUBSCRIBE on its thread's own connection
and, without waiting for the server's confirmation, reads the key on the command connection,
so the two round trips overlap: a ready result returns at once (its confirmation is left
unread, and skipped by the thread's next wait). Otherwise it reads the confirmation and only
*then* reads the key again: a store that lands after the confirmation is announced to us, and
one that landed before it is in the value we just read, so no wake-up can fall between the
two. Each message on the channel is a hint, and the key is the truth, so the waiter re-reads the
key (a forgotten or expired record reads absent; a large result is not copied to every waiter).
A store publishes on every state change, not only ready ones: ``_write`` sees only bytes, and
decoding them to spare waiters a wake-up on STARTED would cost more than that one extra GET.
A thread keeps its connection and leaves the subscription in place when a wait returns: the
next wait drops it in the same write as its SUBSCRIBE, so no UNSUBSCRIBE round trip stands
between a result and ``get()``. A thread's first wait reads the key before it opens that
connection, so reading ready results opens none; ``timeout <= 0`` is one GET and no
subscription. :mod:`celeriac.results.redis.subscriber` says why a stale message or
confirmation is never taken for a new wait's, and how a connection the server closed is
replaced. The async twins run the protocol on a pooled ``redis.asyncio`` connection,
UNSUBSCRIBE on the way out and hand it back; one that ends abnormally (an error, a
cancellation) is disconnected instead, since its subscription state is unknown.

URLs and connection options are parsed by :mod:`celeriac.transports.redis.url`, shared with the
broker: ``redis://[user:password@]host[:port][/db]``, ``rediss://`` (TLS), ``unix:///path.sock?db=N``
and ``redis+sentinel://host:26379[;sentinel://host2:26379][/db]`` with ``master_name``.
Options (``result_backend_transport_options``, or the URL's query string): ``key_prefix`` (alias
``global_keyprefix``), ``max_connections``, ``socket_timeout`` (default 30 s),
``socket_connect_timeout`` (default 5 s), ``socket_keepalive``, ``health_check_interval``,
``client_name``, ``username``, ``password``, ``db``, the TLS options ``ssl_cert_reqs``,
``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_check_hostname``, and for sentinels
``master_name`` and ``sentinel_password``; ``layout``: ``"celeriac"`` (this layout, the default) or
``"celery"``, Celery's keys and records so that Celery and celeriac processes share results
(:mod:`celeriac.results.redis.celery_backend`, which also reads Celery's
``result_chord_ordered``). An unknown option, or value, fails at construction, named.

Faults: every Redis or socket error becomes :class:`~celeriac.errors.BackendError` naming the
server (never the password) and the action. Idempotent operations (store, read, forget) retry
once on a connection error, which is what carries a backend across a Redis restart without
being recreated; ``incr`` never retries (a lost reply may hide an increment that happened).

Async connections are pooled per event loop (redis.asyncio objects belong to the loop that made
them); a loop's pool is closed when that loop shuts down its async generators, as ``asyncio.run``
does, through a small generator parked on the loop for that purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl, urlsplit

import redis
import redis.asyncio as aioredis
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from celeriac.errors import BackendError, ImproperlyConfigured
from celeriac.results.base import Backend, ResultMeta
from celeriac.results.redis.celery_format import CELERY_LAYOUT, NATIVE_LAYOUT
from celeriac.results.redis.subscriber import ThreadSubscribers, published, reply_kind
from celeriac.transports.redis import resp
from celeriac.transports.redis.url import (
    SentinelSpec,
    is_sentinel_url,
    parse_redis_url,
    parse_sentinel_url,
    sentinel_manager,
)

logger = logging.getLogger(__name__)

__all__ = ["RedisBackend"]

T = TypeVar("T")

DEFAULT_KEY_PREFIX = "celeriac:"
#: Applied only where neither the URL nor the options say otherwise.
_DEFAULTS: dict[str, Any] = {"socket_timeout": 30.0, "socket_connect_timeout": 5.0}
#: Options this backend reads itself; the rest are redis_url's connection options.
_OWN_OPTIONS = {
    "key_prefix",
    "global_keyprefix",
    "max_connections",
    "layout",
    "result_chord_ordered",
}
_CONNECTION_OPTIONS = {
    "db",
    "username",
    "password",
    "client_name",
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "health_check_interval",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_check_hostname",
    "master_name",
    "sentinel_password",
    "sentinel_kwargs",
    "min_other_sentinels",
}

#: Waits hold one connection each for as long as they wait, so they draw from a pool of their
#: own: a crowd of waiters must never starve the stores and reads that would wake them (the
#: command pool keeps redis-py's bound, or ``max_connections``). Redis' ``maxclients`` is the
#: real limit on waiters.
SUBSCRIBER_POOL_SIZE = 2**31 - 1

_REASON_MAX = 200

#: Errors after which the same command may be sent again on a fresh connection.
_RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError)
_FAULTS = (RedisError, OSError)


@dataclass(frozen=True, slots=True)
class _Target:
    """How to build clients for this backend: redis-py keyword arguments, and a safe name.

    ``repr`` leaves the keyword arguments out, since they hold the password.
    """

    display: str
    kwargs: dict[str, Any] = field(repr=False)
    sentinel: SentinelSpec | None = field(default=None, repr=False)

    @property
    def password(self) -> str | None:
        value = self.kwargs.get("password")
        return str(value) if value else None

    def sync_client(self, *, subscriber: bool = False) -> redis.Redis:
        """A command client, whose pool blocks for a free connection rather than failing when
        full, or (``subscriber``) a client on an unbounded pool for waits.

        RESP2 is pinned: redis-py 8 defaults to RESP3, where SUBSCRIBE confirmations and
        messages arrive as push frames that a plain read skips (RESP2 also suits Redis < 6).
        redis-py's own retries are off: its default (3, backing off up to 10 s) would hold a
        store for seconds while the server is down; the backend retries idempotent commands
        once instead.
        """
        extra: dict[str, Any] = {"protocol": 2, "retry": Retry(NoBackoff(), 0)}
        if self.sentinel is not None:
            spec = self.sentinel
            sentinels = sentinel_manager(spec)  # one quick retry per sentinel, a clear error
            if subscriber:
                extra["max_connections"] = SUBSCRIBER_POOL_SIZE
            client: redis.Redis = sentinels.master_for(
                spec.master_name, redis_class=redis.Redis, **{**self.kwargs, **extra}
            )
            return client
        made: Any = redis.Redis(**self.kwargs, **extra).connection_pool  # parses the kwargs
        if subscriber:
            pool: Any = redis.ConnectionPool(
                connection_class=made.connection_class,
                max_connections=SUBSCRIBER_POOL_SIZE,
                **made.connection_kwargs,
            )
        else:
            blocking: Any = redis.BlockingConnectionPool  # untyped in redis-py
            pool = blocking(
                connection_class=made.connection_class,
                max_connections=made.max_connections,
                timeout=self.kwargs.get("socket_timeout"),
                **made.connection_kwargs,
            )
        return redis.Redis(connection_pool=pool)

    def async_client(self, *, subscriber: bool = False) -> aioredis.Redis:
        """The asyncio twin of :meth:`sync_client`, bound to the loop that first uses it."""
        extra: dict[str, Any] = {"protocol": 2, "retry": AsyncRetry(NoBackoff(), 0)}
        if self.sentinel is not None:
            spec = self.sentinel
            sentinels = sentinel_manager(spec, asynchronous=True)
            if subscriber:
                extra["max_connections"] = SUBSCRIBER_POOL_SIZE
            client: aioredis.Redis = sentinels.master_for(
                spec.master_name, redis_class=aioredis.Redis, **{**self.kwargs, **extra}
            )
            return client
        made: Any = aioredis.Redis(**self.kwargs, **extra).connection_pool
        if subscriber:
            pool: Any = aioredis.ConnectionPool(
                connection_class=made.connection_class,
                max_connections=SUBSCRIBER_POOL_SIZE,
                **made.connection_kwargs,
            )
        else:
            pool = aioredis.BlockingConnectionPool(
                connection_class=made.connection_class,
                max_connections=made.max_connections,
                timeout=self.kwargs.get("socket_timeout"),
                **made.connection_kwargs,
            )
        return aioredis.Redis(connection_pool=pool)


def _target(url: str, options: Mapping[str, Any]) -> _Target:
    """Parse ``url`` and the connection ``options`` with the shared redis_url helper."""
    spec: SentinelSpec | None = None
    if is_sentinel_url(url):
        spec = parse_sentinel_url(url, options)
        kwargs = dict(spec.connection_kwargs)
        hosts = ",".join(f"{host}:{port}" for host, port in spec.sentinels)
        display = f"sentinel {spec.master_name}@{hosts}/{kwargs.get('db', 0)}"
    else:
        kwargs = parse_redis_url(url, options)
        if "unix_socket_path" in kwargs:
            display = f"unix:{kwargs['unix_socket_path']}?db={kwargs.get('db', 0)}"
        else:
            scheme = "rediss" if kwargs.get("ssl") else "redis"
            display = f"{scheme}://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"
    for name, value in _DEFAULTS.items():
        kwargs.setdefault(name, value)
    return _Target(display, kwargs, spec)


def _layout_of(url: str, options: Mapping[str, Any]) -> str:
    """The ``layout`` option (or the URL query's), checked: ``celeriac`` (the default) or
    ``celery``."""
    value = options.get("layout")
    if value is None:
        value = dict(parse_qsl(urlsplit(url.split(";", 1)[0]).query)).get("layout")
    if value is None:
        return NATIVE_LAYOUT
    if value not in (NATIVE_LAYOUT, CELERY_LAYOUT):
        raise ImproperlyConfigured(
            f"result_backend_transport_options: layout must be {NATIVE_LAYOUT!r} (the default) "
            f"or {CELERY_LAYOUT!r} (Celery's keys and records), not {value!r}"
        )
    return str(value)


def _raise_if_cancelling() -> None:
    """Raise CancelledError if this task was cancelled but the cancellation got lost.

    With ``socket_timeout`` set, redis-py sends each command through ``asyncio.wait_for``,
    which on Python 3.11 swallows a cancellation that lands as the send completes; a waiter
    would then block in its next read for ever. Checked before every blocking read.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _as_bytes(value: Any) -> bytes | None:
    """A GET reply as bytes (the clients never decode, so this only narrows the type)."""
    return None if value is None else bytes(value)


def _ttl_ms(expires_at: float | None) -> int | None:
    """Milliseconds left until ``expires_at``; ``None`` for never, <= 0 for already expired."""
    return None if expires_at is None else math.ceil((expires_at - time.time()) * 1000)


@dataclass(slots=True)
class _LoopClient:
    """One event loop's command client and subscriber pool, closed when that loop shuts down."""

    client: aioredis.Redis
    sub_pool: aioredis.ConnectionPool
    keeper: AsyncGenerator[None, None] | None = None


class RedisBackend(Backend):
    """Results in Redis, readable by every process that reaches the server.

    See the module docstring for the key layout, the waiting protocol, URLs and options.
    """

    schemes: ClassVar[tuple[str, ...]] = ("redis", "rediss", "unix", "redis+sentinel", "sentinel")

    def __new__(cls, url: str = "redis://localhost:6379/0", **kwargs: Any) -> RedisBackend:
        """``layout="celery"`` (an option, or the URL's query) makes a
        :class:`~celeriac.results.redis.celery_backend.CeleryLayoutBackend`: the registry and
        the app keep naming one class per scheme, and the option alone picks the layout."""
        if cls is RedisBackend and _layout_of(url, kwargs) == CELERY_LAYOUT:
            from celeriac.results.redis.celery_backend import CeleryLayoutBackend

            cls = CeleryLayoutBackend
        return super().__new__(cls)

    def __init__(self, url: str = "redis://localhost:6379/0", **kwargs: Any) -> None:
        base = {
            name: kwargs.pop(name)
            for name in ("serializer", "accept", "expires", "serializers", "max_bytes")
            if name in kwargs
        }
        super().__init__(url, **base)
        # The shared parser reads connection options from the query and ignores other names,
        # so this backend checks every name (query and options) and reads its own itself.
        query = dict(parse_qsl(urlsplit(url.split(";", 1)[0]).query))
        unknown = (set(query) | set(kwargs)) - _OWN_OPTIONS - _CONNECTION_OPTIONS
        if unknown:
            raise ImproperlyConfigured(
                f"result_backend_transport_options: unknown Redis option(s) "
                f"{', '.join(sorted(unknown))}; known: "
                f"{', '.join(sorted(_OWN_OPTIONS | _CONNECTION_OPTIONS))}"
            )
        own = {k: v for k, v in query.items() if k in _OWN_OPTIONS}
        own.update({k: kwargs.pop(k) for k in _OWN_OPTIONS if k in kwargs})
        self.layout = _layout_of(url, own)
        prefix = own.get("key_prefix") or own.get("global_keyprefix")
        self.key_prefix = self._key_prefix(str(prefix) if prefix else None)
        self._configure_layout(own)
        self.target = _target(url, kwargs)
        if own.get("max_connections") is not None:
            try:
                self.target.kwargs["max_connections"] = int(own["max_connections"])
            except (TypeError, ValueError):
                raise ImproperlyConfigured(
                    "result_backend_transport_options: max_connections must be an integer"
                ) from None
        self._client = self.target.sync_client()
        self._sub_pool = self.target.sync_client(subscriber=True).connection_pool
        # each thread keeps one subscriber connection (see subscriber.py)
        self._subscribers = ThreadSubscribers(lambda: self._sub_pool.make_connection())
        self._loops: dict[asyncio.AbstractEventLoop, _LoopClient] = {}
        self._loops_lock = threading.Lock()
        self._pid = os.getpid()
        #: Each storing thread's own connection (see :meth:`_write_many`).
        self._thread_conns = threading.local()
        #: weak: a thread that ends takes its connection with it (closed when collected)
        self._own_conns: weakref.WeakSet[Any] = weakref.WeakSet()

    def _key_prefix(self, given: str | None) -> str:
        """The key prefix in effect: the one given, verbatim, else ``celeriac:``."""
        return given if given else DEFAULT_KEY_PREFIX

    def _configure_layout(self, options: Mapping[str, Any]) -> None:
        """Read the options only a layout understands; the native one has none."""
        if "result_chord_ordered" in options:
            raise ImproperlyConfigured(
                "result_backend_transport_options: result_chord_ordered applies only with "
                f"layout={CELERY_LAYOUT!r} (Celery's chord keys)"
            )

    def __repr__(self) -> str:
        # Built from the parsed target, not the URL: a password may hide in a query string.
        return f"<{type(self).__name__} {self.target.display} prefix={self.key_prefix!r}>"

    # -- names ------------------------------------------------------------------------------
    def result_key(self, task_id: str) -> str:
        return f"{self.key_prefix}result:{task_id}"

    def ready_channel(self, task_id: str) -> str:
        return f"{self.key_prefix}result-ready:{task_id}"

    def counter_key(self, key: str) -> str:
        return f"{self.key_prefix}counter:{key}"

    # -- faults -----------------------------------------------------------------------------
    def _fault(self, action: str, exc: BaseException) -> BackendError:
        """A short, password-free BackendError for a Redis or socket failure."""
        reason = (str(exc) or type(exc).__name__).splitlines()[0]
        # Some redis-py errors embed whole client reprs (sentinel's "No master found"): cut.
        reason = reason.split(" : <", 1)[0]
        if len(reason) > _REASON_MAX:
            reason = reason[: _REASON_MAX - 3] + "..."
        password = self.target.password
        if password:
            reason = reason.replace(password, "***")
        return BackendError(f"redis result backend {self.target.display}: {action}: {reason}")

    def _call(self, action: str, op: Callable[[], T], *, idempotent: bool = True) -> T:
        """Run ``op``; on a connection error retry once if it is safe, then raise BackendError.

        The retry is what survives a restart: the first attempt may land on a pooled
        connection the old server closed, the second opens a new one.
        """
        try:
            return op()
        except _RETRYABLE as exc:
            if not idempotent:
                raise self._fault(action, exc) from exc
            logger.debug("redis result backend %s: %s: retrying once", self.target.display, action)
        except _FAULTS as exc:
            raise self._fault(action, exc) from exc
        try:
            return op()
        except _FAULTS as exc:
            raise self._fault(action, exc) from exc

    async def _acall(
        self, action: str, op: Callable[[], Awaitable[T]], *, idempotent: bool = True
    ) -> T:
        """The async twin of :meth:`_call`."""
        try:
            return await op()
        except _RETRYABLE as exc:
            if not idempotent:
                raise self._fault(action, exc) from exc
            logger.debug("redis result backend %s: %s: retrying once", self.target.display, action)
        except _FAULTS as exc:
            raise self._fault(action, exc) from exc
        try:
            return await op()
        except _FAULTS as exc:
            raise self._fault(action, exc) from exc

    # -- storage: one round trip each -------------------------------------------------------
    def _write(self, task_id: str, data: bytes, expires_at: float | None) -> None:
        self._write_many([(task_id, data, expires_at)])

    def _write_many(self, items: list[tuple[str, bytes, float | None]]) -> None:
        """Every record in one round trip (one MULTI per batch: SET and PUBLISH each), packed
        by hand on this thread's own connection (:mod:`celeriac.transports.redis.resp`: a
        worker stores every task's result here, and redis-py's pipeline costs more than the
        write)."""
        commands = [
            c for task_id, data, at in items for c in self._write_commands(task_id, data, at)
        ]
        self._call(f"store {len(items)} results", lambda: resp.transaction(self._own(), commands))

    def _own(self) -> Any:
        """This thread's own connection (a forked child opens its own)."""
        local = self._thread_conns
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():
            # made apart from the pool: a pool counts (and the blocking one keeps) every
            # connection it makes, so a process whose threads come and go would reach its cap
            pool = self._client.connection_pool
            conn = pool.connection_class(**pool.connection_kwargs)
            local.conn, local.pid = conn, os.getpid()
            with self._loops_lock:
                self._own_conns.add(conn)
        return conn

    def _queue_write(self, pipe: Any, task_id: str, data: bytes, expires_at: float | None) -> None:
        """The record's commands, queued on a MULTI pipeline (the async path)."""
        for command in self._write_commands(task_id, data, expires_at):
            pipe.execute_command(*command)

    def _write_commands(
        self, task_id: str, data: bytes, expires_at: float | None
    ) -> list[tuple[Any, ...]]:
        """SET (or DEL, when already expired) and PUBLISH."""
        key, ttl = self.result_key(task_id), _ttl_ms(expires_at)
        channel = self.ready_channel(task_id)
        # the record itself rides on the announcement, so a waiter needs no second GET
        if ttl is None:
            return [("SET", key, data), ("PUBLISH", channel, data)]
        if ttl > 0:
            return [("SET", key, data, "PX", ttl), ("PUBLISH", channel, data)]
        return [("DEL", key), ("PUBLISH", channel, b"")]  # stored already expired: absent

    def _read(self, task_id: str) -> bytes | None:
        key = self.result_key(task_id)
        return self._call(f"read {task_id}", lambda: self._get(key))

    def _get(self, key: str) -> bytes | None:
        """GET on this thread's own connection, packed by hand: a ``delay().get()`` reads
        twice, and a read through redis-py's pool and client (checkout, health and liveness
        checks, metrics hooks) cost several times the command."""
        return _as_bytes(resp.call(self._own(), ("GET", key)))

    def _delete(self, task_id: str) -> None:
        self._call(f"forget {task_id}", lambda: self._client.delete(self.result_key(task_id)))

    def join_chord(
        self, group_id: str, member_id: str, *, index: int | None = None
    ) -> tuple[bool, int]:
        """SADD and SCARD in one MULTI: a member is counted once however often it reports, and
        membership and count change together (a worker killed between two commands cannot
        leave a member marked but uncounted). ``index`` (the member's place in the header) is
        accepted for the Celery layout's sake and not needed here: the body reads the header's
        results through the saved group."""
        key, ttl = self.counter_key(f"chord-members:{group_id}"), _ttl_ms(self._expires_at())

        def op() -> tuple[int, int]:
            pipe = self._client.pipeline(transaction=True)
            pipe.sadd(key, member_id)
            pipe.scard(key)
            if ttl is None:
                pipe.persist(key)
            else:
                pipe.pexpire(key, max(ttl, 1))
            added, count, _ = pipe.execute()
            return int(added), int(count)

        # safe to retry: a MULTI applied before its reply was lost reads as "already counted"
        added, count = self._call(f"join chord {group_id}", op)
        return bool(added), count

    def get_many(self, task_ids: Sequence[str]) -> list[ResultMeta]:
        """One MGET for all of them (a 1,000-member chord's results in one round trip)."""
        if not task_ids:
            return []
        keys = [self.result_key(t) for t in task_ids]
        values = self._call(f"read {len(keys)} results", lambda: self._client.mget(keys))
        return [
            ResultMeta(task_id=t) if raw is None else self._decode(_as_bytes(raw) or b"")
            for t, raw in zip(task_ids, values, strict=True)
        ]

    def _incr(self, key: str, amount: int, expires_at: float | None) -> int:
        def op() -> int:
            pipe = self._client.pipeline(transaction=True)
            self._queue_incr(pipe, key, amount, expires_at)
            return int(pipe.execute()[0])

        return self._call(f"incr {key}", op, idempotent=False)

    def _queue_incr(self, pipe: Any, key: str, amount: int, expires_at: float | None) -> None:
        """INCRBY and renew the expiry (PERSIST when none), as the other backends do."""
        name, ttl = self.counter_key(key), _ttl_ms(expires_at)
        pipe.incrby(name, amount)
        if ttl is None:
            pipe.persist(name)
        else:
            pipe.pexpire(name, max(ttl, 0))  # a non-positive expiry deletes the key at once

    def cleanup(self) -> int:
        """Redis expires keys itself: nothing to do."""
        return 0

    def close(self) -> None:
        """Close the sync pools; async pools close with their event loops (or :meth:`aclose`)."""
        self._client.connection_pool.disconnect()
        with self._loops_lock:
            own, self._own_conns = list(self._own_conns), weakref.WeakSet()
        for conn in own:
            with contextlib.suppress(Exception):
                conn.disconnect()
        self._subscribers.close()
        self._sub_pool.disconnect()

    # -- waiting ----------------------------------------------------------------------------
    def _is_ready(self, data: bytes | None) -> bool:
        return data is not None and self._decode(data).ready

    def _wait(self, task_id: str, timeout: float | None) -> bytes | None:
        """Read, with the subscription written meanwhile; if not ready, wait for the
        confirmation, read again, and re-read on every message (see the module docstring)."""
        if timeout is not None and timeout <= 0:
            return self._read(task_id)  # a look, not a wait: no subscription
        deadline = None if timeout is None else time.monotonic() + timeout
        key = self.result_key(task_id)
        try:
            return self._subscribers.wait(
                self.ready_channel(task_id),
                deadline,
                # the first read retries and raises BackendError itself, like get_meta's
                lambda: self._read(task_id),
                lambda: self._get(key),
                self._is_ready,
            )
        except _FAULTS as exc:
            raise self._fault(f"wait for {task_id}", exc) from exc

    # -- async twins on redis.asyncio -------------------------------------------------------
    def _check_fork(self) -> None:
        """A forked child starts with no async pools (the parent's belong to its loops)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._loops = {}
            self._loops_lock = threading.Lock()

    async def _loop_client(self) -> _LoopClient:
        """This event loop's pool and client, made on first use."""
        self._check_fork()
        loop = asyncio.get_running_loop()
        entry = self._loops.get(loop)
        if entry is not None:
            return entry
        subscriber = self.target.async_client(subscriber=True)
        entry = _LoopClient(self.target.async_client(), subscriber.connection_pool)
        with self._loops_lock:
            # Loops closed without shutting down their generators: drop their pools.
            for stale in [other for other in self._loops if other.is_closed()]:
                del self._loops[stale]
            self._loops[loop] = entry
        entry.keeper = self._close_with_loop(loop, entry)
        await anext(entry.keeper)  # parked on the loop until shutdown_asyncgens closes it
        return entry

    async def _close_with_loop(
        self, loop: asyncio.AbstractEventLoop, entry: _LoopClient
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._loops_lock:
                if self._loops.get(loop) is entry:
                    del self._loops[loop]
            await entry.client.connection_pool.aclose()
            await entry.sub_pool.aclose()

    async def aclose(self) -> None:
        """Close this event loop's async pool now rather than when the loop shuts down."""
        entry = self._loops.get(asyncio.get_running_loop())
        if entry is not None and entry.keeper is not None:
            await entry.keeper.aclose()

    async def astore(self, meta: ResultMeta) -> None:
        if meta.ready and meta.date_done is None:
            meta = replace(meta, date_done=time.time())
        data, expires_at = self._encode_bounded(meta), self._expires_at()
        entry = await self._loop_client()

        async def op() -> None:
            pipe = entry.client.pipeline(transaction=True)
            self._queue_write(pipe, meta.task_id, data, expires_at)
            await pipe.execute()

        await self._acall(f"store {meta.task_id}", op)

    async def _aread(self, entry: _LoopClient, task_id: str) -> bytes | None:
        key = self.result_key(task_id)
        return _as_bytes(await self._acall(f"read {task_id}", lambda: entry.client.get(key)))

    async def aget_meta(self, task_id: str) -> ResultMeta:
        data = await self._aread(await self._loop_client(), task_id)
        return ResultMeta(task_id=task_id) if data is None else self._decode(data)

    async def await_for(self, task_id: str, timeout: float | None = None) -> ResultMeta:
        entry = await self._loop_client()
        data = await self._aread(entry, task_id)
        if not self._is_ready(data) and not (timeout is not None and timeout <= 0):
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                data = await self._asubscribe_and_wait(entry, task_id, deadline, data)
            except _FAULTS as exc:
                raise self._fault(f"wait for {task_id}", exc) from exc
        return ResultMeta(task_id=task_id) if data is None else self._decode(data)

    async def _asubscribe_and_wait(
        self, entry: _LoopClient, task_id: str, deadline: float | None, data: bytes | None
    ) -> bytes | None:
        key, channel = self.result_key(task_id), self.ready_channel(task_id)
        pool: Any = entry.sub_pool
        conn: Any = await pool.get_connection()
        clean = False
        try:
            await conn.send_command("SUBSCRIBE", channel)
            while True:
                reply = await self._anext_reply(conn, deadline)
                if reply is None:
                    return data
                if reply_kind(reply) == b"subscribe":
                    break
            data = _as_bytes(await entry.client.get(key))
            while not self._is_ready(data):
                reply = await self._anext_reply(conn, deadline)
                if reply is None:
                    break
                if reply_kind(reply) == b"message":
                    data = published(reply) or _as_bytes(await entry.client.get(key))
            await conn.send_command("UNSUBSCRIBE", channel)
            while True:
                reply = await conn.read_response()
                if reply_kind(reply) == b"unsubscribe" and reply[2] == 0:
                    break
            clean = True
            _raise_if_cancelling()
            return data
        finally:
            # Shielded: a second cancellation must not strand the connection outside the pool.
            await asyncio.shield(self._arelease(pool, conn, clean))

    @staticmethod
    async def _arelease(pool: aioredis.ConnectionPool, conn: Any, clean: bool) -> None:
        if not clean:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
        await pool.release(conn)

    @staticmethod
    async def _anext_reply(conn: Any, deadline: float | None) -> Any:
        """The next pub/sub reply, or ``None`` once ``deadline`` passes.

        redis-py's async parser keeps a partly read reply across a timed-out read, so the
        connection stays usable for the UNSUBSCRIBE that follows.
        """
        _raise_if_cancelling()
        remaining = math.inf if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            return None
        return await conn.read_response(timeout=remaining)
