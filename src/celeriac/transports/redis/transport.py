"""The Redis broker: the whole transport contract on one Redis server, one script call per batch.

URLs: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS), ``unix:///path?db=N``
and ``redis+sentinel://host:26379;sentinel://host2:26379/db`` (see
:mod:`celeriac.transports.redis.url` for the TLS and sentinel options).

Options (``broker_transport_options``): ``lease_seconds`` and ``max_deliveries`` (see
:mod:`celeriac.transports.base`); ``key_prefix`` (``"celeriac:"``), so several apps or tests may
share one database; ``retries`` (1): how many times a command is retried at once on a broken
connection (the first command after a Redis restart meets a dead pooled socket); the connection
options of :func:`~celeriac.transports.redis.url.parse_redis_url`; ``fanout_prefix`` and
``global_keyprefix``, kombu's, for the names of transient fan-out (events, control requests:
PUBLISH/PSUBSCRIBE, nothing stored, see :mod:`celeriac.transports.redis.fanout`; to a direct
exchange, such as remote-control replies, kombu's lists, see
:mod:`celeriac.transports.redis.direct`), and ``transient_retention`` (60 s: how long such a
list outlives its last message). Unknown keys are ignored.

``layout`` picks the key layout: ``"celeriac"`` (this one, the default) or ``"kombu"``, kombu's
own lists and records, so that Celery 5.7 workers and clients share the queues
(:mod:`celeriac.transports.redis.kombu_transport`, which says what holds there and what
differs); an unknown value fails at start-up, naming the option.

**Data and atomicity.** Messages, leases and delays live in sorted sets and hashes per queue,
laid out in :mod:`celeriac.transports.redis.scripts`; every operation that changes them is one
Lua script, so a batch is stored, claimed or settled all at once, and time is Redis's own clock.
A keyed publish (:attr:`~celeriac.transports.base.Outgoing.dedup_key`) sets ``dedup:<key>``
with ``NX PX`` in the same script call that stores the message, or drops the item, which then
counts 0 (it reached no queue through this call); items without a key add no argument.

**Topology** (exchanges, queues, bindings) is stored in Redis as one JSON document with a
version token, so every process sees the same. Declarations are compare-and-set against that
token, re-validated by the same :class:`~celeriac.transports.topology.Topology` rules as the
memory and SQLite brokers. Producers route *client-side* over a cached copy; the publish script
refuses a batch routed under an old version, and the producer reloads and routes again. So a
steady-state ``publish`` is one round trip, and a new binding made elsewhere is seen at once.
The version is a random token rather than a counter, so a Redis that lost its data (and started
counting again) can never match a client's stale copy by accident. Such a loss (a restart
without persistence) is noticed by a new topology *epoch* on the next publish or get, and each
instance declares again what it had declared: producers that declare once per process would
otherwise see every later send dropped as unroutable.

**Consuming.** ``get`` runs the claim script: it moves due delayed messages and expired leases
to ready, pops up to ``max_count`` (shared fairly between the queues, the first one rotating
per call), dead-letters those whose lease already ran out ``max_deliveries`` times (a requeue
by a living worker, for a rate limit or an early eta, does not count), leases the rest and
says when anything in these queues next falls due. When nothing was claimed it blocks in
``BLPOP`` on the queues' *notify* lists, which publishes, requeues and claims that leave work
behind push to, for at most the time until the next due message; so an idle worker makes no
requests in between, and a new message wakes it after one round trip. A cancelled ``get`` lets
its claim finish (shielded) and requeues what it returned.

**Leases.** A delivery's tag is ``(message id, delivery count)``: the count is raised by every
lease, so it is the lease's token; ``ack``, ``requeue``, ``reject`` and ``extend`` act only on
messages still leased under it, and skip the others with a warning ("no longer held").

**Connections and faults.** Async methods use a ``redis.asyncio`` client per event loop (an
asyncio connection belongs to the loop that opened it) plus a second one for ``BLPOP``;
``publish_sync`` uses a blocking ``redis.Redis`` (thread-safe pool), so ``.delay()`` in a Django
view is one round trip and no event loop. Scripts are ``Script`` objects, reloaded on
``NOSCRIPT`` after a restart. Every redis-py error surfaces as
:class:`~celeriac.errors.TransportError` with the URL's password redacted; pools reconnect by
themselves once the server is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import redis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from celeriac.errors import ImproperlyConfigured, TransportError
from celeriac.protocol.message import Message
from celeriac.routing import Binding, Exchange, Queue
from celeriac.transports.base import (
    DeadLetter,
    Delivery,
    EarlyAcks,
    Listener,
    Outgoing,
    Transport,
    confirm_window,
)
from celeriac.transports.redis import direct, fanout, resp
from celeriac.transports.redis import scripts as lua
from celeriac.transports.redis.fetcher import Fetcher
from celeriac.transports.redis.kombu_layout import KOMBU_LAYOUT, NATIVE_LAYOUT, layout_of
from celeriac.transports.redis.link import READ_ONLY, Link, raised, read_only
from celeriac.transports.redis.resp import pack_command
from celeriac.transports.redis.url import async_client, database_of, password_of, sync_client
from celeriac.transports.redis.wake import wait_then_claim
from celeriac.transports.redis.writebehind import WriteBehind
from celeriac.transports.topology import Topology
from celeriac.transports.transient import DEFAULT_BUFFER
from celeriac.utils.urls import redact_url

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Where the broker's keys live unless ``key_prefix`` says otherwise (beat's store shares it).
DEFAULT_KEY_PREFIX = "celeriac:"
_PUBLISH_ATTEMPTS = 3  # route with the cached topology, then reload at most twice
_CAS_ATTEMPTS = 20
_BLOCK_GRACE = 5.0  # a BLPOP that outlives its own timeout by this much means a dead link
_LETTER_PAGE = 500  # dead letters read per LRANGE while looking for those to remove
_SCRIPTS = {
    "publish": lua.PUBLISH,
    "claim": lua.CLAIM,
    "settle": lua.SETTLE,
    "size": lua.SIZE,
    "purge": lua.PURGE,
    "age": lua.AGE,
    "change": lua.CHANGE_TOPOLOGY,
    "push_direct": direct.PUSH,
    "publish_fanout": fanout.PUBLISH_ALL,
}


@dataclass(slots=True)
class _LoopClients:
    """The asyncio clients of one event loop: commands, their scripts, and the links of the
    hot calls and of the waits for messages."""

    client: Any
    scripts: dict[str, Any]
    keeper: AsyncGenerator[None, None] | None = None
    #: What a subclass keeps per loop (kombu's layout: its wake-up tracker), each closed with
    #: the loop through its ``aclose()``.
    extras: dict[str, Any] = field(default_factory=dict)
    #: The pipelined connection of the hot script calls (:meth:`RedisTransport._scripts`).
    link: Link | None = None
    #: The link its waits for messages block on (:mod:`.wake`).
    waiter: Link | None = None
    link_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True, slots=True)
class _Step:
    """One I/O step of a sans-I/O algorithm: run ``script`` with ``args``, or (``script`` None)
    load the topology. The async and sync drivers run the same algorithms this way.

    With ``calls`` (an iterable of argument tuples, maybe lazy) ``script`` runs once per item
    and the reply is the list of their replies: the sync driver pipelines them (a batch's
    chunks), taking each from ``calls`` only once the previous one is sent, so Redis runs one
    chunk while the next is built.
    """

    script: str | None
    args: tuple[Any, ...] = ()
    calls: Iterable[tuple[Any, ...]] | None = None


_LOAD = _Step(None)
Steps = Generator[_Step, Any, T]


class RedisTransport(Transport):
    """The Redis broker (see the module docstring for semantics and options)."""

    schemes: ClassVar[tuple[str, ...]] = ("redis", "rediss", "unix", "redis+sentinel", "sentinel")
    native_sync_publish: ClassVar[bool] = True
    deduplicates: ClassVar[bool] = True
    #: The Lua scripts each client registers, by name (a layout has its own).
    SCRIPTS: ClassVar[dict[str, str]] = _SCRIPTS
    #: ``"celeriac"`` (this layout) or ``"kombu"`` (kombu's: see ``kombu_transport``).
    layout: ClassVar[str] = NATIVE_LAYOUT

    def __new__(cls, url: str = "redis://127.0.0.1:6379/0", **options: Any) -> RedisTransport:
        """``broker_transport_options={"layout": "kombu"}`` makes a
        :class:`~celeriac.transports.redis.kombu_transport.KombuRedisTransport`: the registry
        keeps one class per scheme, and the option alone picks the layout (as the Redis result
        backend's ``layout`` does)."""
        if cls is RedisTransport and layout_of(options) == KOMBU_LAYOUT:
            from celeriac.transports.redis.kombu_transport import KombuRedisTransport

            cls = KombuRedisTransport
        return super().__new__(cls)

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", **options: Any) -> None:
        super().__init__(url, **options)
        self.prefix = str(options.get("key_prefix", DEFAULT_KEY_PREFIX))
        #: Sync sends written ahead of their replies (:mod:`.writebehind`); kombu's layout
        #: publishes its own way and waits.
        self.sync_publish_window = confirm_window(options) if self.layout == NATIVE_LAYOUT else 0
        try:
            retries = int(options.get("retries", 1))
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"broker_transport_options 'retries': {exc}") from None
        connection = {k: v for k, v in options.items() if k not in ("key_prefix", "retries")}
        connection.setdefault("socket_connect_timeout", 5.0)
        connection.setdefault("socket_timeout", 30.0)  # BLPOP's client has none
        connection.setdefault("socket_keepalive", True)
        self._connection = connection
        self._retries = max(retries, 0)
        self._early_acks: EarlyAcks | None = None
        # parsing now makes a bad URL fail at start-up rather than at the first publish
        self._password = password_of(url, connection)
        db = database_of(url, connection)
        #: kombu's prefix of the keys and channels of transient fan-out (not ``key_prefix``).
        self.global_keyprefix = str(options.get("global_keyprefix") or "")
        #: kombu's fanout channel names (see :mod:`celeriac.transports.redis.fanout`).
        self.channels = fanout.Channels(
            self.global_keyprefix + fanout.fanout_prefix(options.get("fanout_prefix", True), db)
        )
        try:
            self.transient_retention = float(options.get("transient_retention", 60.0))
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"broker_transport_options 'transient_retention': {exc}"
            ) from None
        if self.transient_retention <= 0:
            raise ImproperlyConfigured("broker_transport_options 'transient_retention' must be > 0")
        self._listeners: set[fanout.RedisListener | direct.DirectListener] = set()
        self._lock = threading.Lock()
        self._loops: dict[asyncio.AbstractEventLoop, _LoopClients] = {}
        self._sync: tuple[Any, dict[str, Any]] | None = None
        #: Each producing thread's own connection for the sync publish path, and its window.
        self._thread_conns = threading.local()
        #: weak: a thread that ends takes its connection and window with it (a window with
        #: replies still unread is held by the write-behind's reader until they are read)
        self._all_thread_conns: weakref.WeakSet[Any] = weakref.WeakSet()
        self._behinds: weakref.WeakSet[WriteBehind] = weakref.WeakSet()
        self._topology: lua.StoredTopology | None = None
        self._epoch = ""  # the topology epoch of this instance's last declaration
        self._auto_delete: set[str] = set()
        # what this instance declared, in order, to declare again if Redis loses its data
        self._declared: dict[str, Callable[[Topology], bool]] = {}
        self._rotation = 0
        self._returning: set[asyncio.Task[None]] = set()
        #: the claims of cancelled gets still running (their haul is given back when they end)
        self._abandoned: set[asyncio.Future[Any]] = set()
        #: queues -> event-loop time until which nothing in them falls due, for the queues whose
        #: last claim came back short (they were empty): see ``get``.
        self._emptied: dict[tuple[str, ...], float] = {}

    def queue_key(self, queue: str, suffix: str) -> str:
        return f"{self.prefix}q:{queue}:{suffix}"

    # -- connections --------------------------------------------------------------------------
    async def _clients(self) -> _LoopClients:
        """This event loop's clients, made on first use and closed when the loop shuts down.

        An asyncio connection belongs to the loop that opened it, and a transport may serve
        several loops (a worker's, a portal's, one ``asyncio.run`` per test). Each loop's
        clients are tied to an async generator parked on that loop: ``asyncio.run`` (through
        ``shutdown_asyncgens``) finalizes it while the loop still runs, which closes them.
        """
        loop = asyncio.get_running_loop()
        held = self._loops.get(loop)
        if held is not None:
            return held
        retry = AsyncRetry(NoBackoff(), self._retries)
        client = async_client(self.url, self._connection, retry=retry)
        scripts = {name: client.register_script(src) for name, src in self.SCRIPTS.items()}
        held = _LoopClients(client, scripts)
        with self._lock:
            for old in [other for other in self._loops if other.is_closed()]:
                del self._loops[old]  # a loop closed without shutdown_asyncgens: left to the GC
            self._loops[loop] = held
        held.keeper = self._close_with_loop(loop, held)
        await anext(held.keeper)
        return held

    async def _close_with_loop(
        self, loop: asyncio.AbstractEventLoop, held: _LoopClients
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                if self._loops.get(loop) is held:
                    del self._loops[loop]
            for extra in list(held.extras.values()):
                with contextlib.suppress(Exception):
                    await extra.aclose()
            for link in (held.link, held.waiter):
                if link is not None:
                    link.close()
            with contextlib.suppress(Exception):
                await held.client.aclose()

    def _sync_clients(self) -> tuple[Any, dict[str, Any]]:
        with self._lock:
            if self._sync is None:
                retry = Retry(NoBackoff(), self._retries)
                client = sync_client(self.url, self._connection, retry=retry)
                scripts = {name: client.register_script(src) for name, src in self.SCRIPTS.items()}
                self._sync = (client, scripts)
            return self._sync

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """redis-py's errors as TransportError: a short reason, the URL redacted, no password."""
        try:
            yield
        except (redis.RedisError, OSError) as exc:
            raise self.failure(action, exc) from exc

    def failure(self, action: str, exc: BaseException) -> TransportError:
        """``exc`` (redis-py's, or an OSError) as the TransportError :meth:`errors` raises."""
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self._password:
            reason = reason.replace(self._password, "***")
        return TransportError(f"Redis broker {redact_url(self.url)}: {action} failed: {reason}")

    def errors(self, action: str) -> contextlib.AbstractContextManager[None]:
        """redis-py's errors as TransportError (for the modules beside this one)."""
        return self._errors(action)

    def subscriber_client(self, client_name: str) -> Any:
        """A new ``redis.asyncio`` client for one subscriber connection: no read timeout (it
        waits for messages; the listener probes a silent one itself), and RESP2, in which a
        published message is a plain reply (RESP3 makes it a push that ``read_response`` hides).
        """
        return async_client(
            self.url, self._connection, socket_timeout=None, protocol=2, client_name=client_name
        )

    async def connect(self) -> None:
        with self._errors("connect"):
            clients = await self._clients()
            await clients.client.ping()

    async def close(self) -> None:
        """Close this instance's listeners, delete its auto-delete queues, give back abandoned
        claims, disconnect."""
        for listener in list(self._listeners):
            with contextlib.suppress(Exception):
                await listener.close()
        for name in sorted(self._auto_delete):
            try:
                await self.delete_queue(name)
            except TransportError as exc:
                logger.warning("could not delete auto-delete queue %r: %s", name, exc)
        self._auto_delete.clear()
        if self._returning:
            await asyncio.gather(*self._returning, return_exceptions=True)
        with self._lock:
            behinds, self._behinds = list(self._behinds), weakref.WeakSet()
        for behind in behinds:  # every thread's sends read to their end (they block: off-loop)
            await asyncio.to_thread(behind.close)
        with self._lock:
            own = self._loops.get(asyncio.get_running_loop())
            sync, self._sync = self._sync, None
            self._topology = None
            thread_conns, self._all_thread_conns = list(self._all_thread_conns), weakref.WeakSet()
        for conn in thread_conns:
            with contextlib.suppress(Exception):
                conn.disconnect()
        if own is not None and own.keeper is not None:
            await own.keeper.aclose()
        if sync is not None:
            sync[0].close()

    # -- running steps ------------------------------------------------------------------------
    async def _drive(self, steps: Steps[T], action: str) -> T:
        """Run a step generator on this loop's async client."""
        clients = await self._clients()
        keys = [self.prefix + key for key in lua.TOPOLOGY_KEYS]
        with self._errors(action):
            try:
                step = next(steps)
                reply: Any
                while True:
                    if step.script is None:
                        reply = lua.decode_topology(*await clients.client.mget(keys))
                    elif step.calls is not None:
                        script = clients.scripts[step.script]
                        reply = [await script(args=args) for args in step.calls]
                    else:
                        reply = await clients.scripts[step.script](args=step.args)
                    step = steps.send(reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def _drive_sync(self, steps: Steps[T], action: str, step: _Step | None = None) -> T:
        """Run a step generator on the blocking client, in the calling thread (from ``step``
        when it stands at one already)."""
        with self._errors(action):
            try:
                if step is None:
                    step = next(steps)
                while True:
                    step = steps.send(self._run_sync(step))
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def _run_sync(self, step: _Step) -> Any:
        """One step on the blocking client; its reply."""
        client, scripts = self._sync_clients()
        if step.script is None:
            return lua.decode_topology(*client.mget([self.prefix + k for k in lua.TOPOLOGY_KEYS]))
        if step.calls is not None:
            return self._evalsha_sync(client, scripts[step.script], step.calls)
        return self._evalsha_sync(client, scripts[step.script], [step.args])[0]

    def _thread_conn(self, client: Any) -> Any:
        """The calling thread's own connection (a forked child makes its own: the socket it
        inherited is its parent's)."""
        local = self._thread_conns
        conn = getattr(local, "conn", None)
        if conn is None or local.owner is not self._sync or local.pid != os.getpid():
            # made apart from the pool, which counts every connection it makes: a process
            # whose threads come and go (a thread per request) would reach its cap
            pool = client.connection_pool
            conn = pool.connection_class(**pool.connection_kwargs)
            local.conn, local.owner, local.pid, local.behind = conn, self._sync, os.getpid(), None
            with self._lock:
                self._all_thread_conns.add(conn)
        return conn

    def _write_behind(self) -> WriteBehind:
        """The calling thread's window of sync sends, on its own connection."""
        client, scripts = self._sync_clients()
        conn = self._thread_conn(client)
        local = self._thread_conns
        behind: WriteBehind | None = local.behind
        if behind is None:
            script = scripts["publish"]
            behind = WriteBehind(
                conn,
                script.sha,
                script.script,
                lambda: client.script_load(script.script),
                lambda steps, step: self._drive_sync(steps, "publish", step),
                lambda items, payloads: self._drive_sync(
                    self._publish_steps(items, payloads), "publish"
                ),
                self.sync_publish_window,
            )
            local.behind = behind
            with self._lock:
                self._behinds.add(behind)
        return behind

    def _evalsha_sync(self, client: Any, script: Any, calls: Iterable[Sequence[Any]]) -> list[Any]:
        """EVALSHA once per argument list in ``calls``, pipelined on this thread's own
        connection: a sync ``.delay()`` is one round trip with none of the pool's per-command
        bookkeeping (checkout, release, fork checks, metrics), and a batch's chunks are each
        sent as soon as built, so Redis runs one while the next is built; the replies are read
        at the end, in order.

        The connection belongs to the calling thread (a Django worker thread, say); a broken
        one is dropped and the calls not yet answered are sent once more on a new one (a
        batch's chunks carry idempotency tokens, so one whose reply was lost is not stored
        twice; a single ``.delay()`` whose reply was lost may be); a Redis that lost its script
        cache (restarted) gets the script again.
        """
        conn = self._thread_conn(client)
        behind: WriteBehind | None = self._thread_conns.behind
        if behind is not None:  # this call's replies must not be read as the window's
            behind.drain_for_blocking_use()
        commands: list[bytes] = []
        replies: list[Any] = []
        answered: list[bool] = []
        fresh = iter(calls)
        resend: list[int] = []  # built, but to go again: a new connection, a reloaded script
        error: redis.ResponseError | None = None
        reconnected, reloads = False, 0
        while True:
            sent: list[int] = []
            try:
                for index in resend:
                    resp.send(conn, commands[index])
                    sent.append(index)
                for args in fresh:
                    sent.append(len(commands))
                    commands.append(pack_command(("EVALSHA", script.sha, 0, *args)))
                    replies.append(None)
                    answered.append(False)
                    resp.send(conn, commands[-1])
                for index in sent:
                    try:
                        replies[index] = conn.read_response()
                        answered[index] = True
                    except redis.exceptions.NoScriptError:
                        pass  # sent again below, once the script is loaded
                    except redis.ResponseError as exc:  # read the others: the link stays in step
                        answered[index] = True
                        error = error or exc
            except (redis.ConnectionError, redis.TimeoutError):
                conn.disconnect()
                if reconnected:
                    raise
                reconnected = True
                resend = [index for index, done in enumerate(answered) if not done]
                continue
            except BaseException:  # replies may be left unread: the link is out of step
                conn.disconnect()
                raise
            if error is not None:
                raise error
            resend = [index for index, done in enumerate(answered) if not done]
            if not resend:
                return replies
            if reloads == 2:
                raise redis.exceptions.NoScriptError("the script vanished again once loaded")
            reloads += 1
            client.script_load(script.script)

    # -- topology -----------------------------------------------------------------------------
    def _change_steps(self, change: Callable[[Topology], bool], delete: str = "") -> Steps[None]:
        """Apply one validated change with compare-and-set on the topology's version.

        A concurrent change by another process makes the script refuse; the change is then
        validated again on the new topology, so two declarations never overwrite each other.
        """
        for _ in range(_CAS_ATTEMPTS):
            stored: lua.StoredTopology = yield _LOAD
            version, topology = stored.version, stored.topology
            changed = change(topology)
            if not changed and not delete:
                self._topology, self._epoch = stored, stored.epoch
                return
            new_version = secrets.token_hex(8) if changed else version
            blob = lua.encode_topology(topology) if changed else b""
            args = (self.prefix, version, new_version, blob, delete, secrets.token_hex(8))
            epoch = yield _Step("change", args)
            if epoch:
                self._epoch = bytes(epoch).decode()
                self._topology = lua.StoredTopology(new_version, topology, self._epoch)
                return
        raise TransportError("the topology kept changing under this declaration; try again")

    def _redeclare_steps(self) -> Steps[None]:
        """Declare again everything this instance declared, after Redis lost its data.

        Declarations that no longer apply (another process declared otherwise since) are
        skipped with a warning; the epoch is taken as seen either way, so this runs once.
        """
        logger.warning(
            "Redis broker %s lost its topology (restarted without persistence?): "
            "declaring again the %d declarations of this process",
            redact_url(self.url),
            len(self._declared),
        )
        for key, change in list(self._declared.items()):
            try:
                yield from self._change_steps(change)
            except TransportError as exc:  # e.g. declared otherwise since: keep theirs
                logger.warning("could not declare %s again: %s", key, exc)
        stored: lua.StoredTopology = yield _LOAD
        self._topology, self._epoch = stored, stored.epoch

    async def _declare(self, key: str, change: Callable[[Topology], bool]) -> None:
        """Make one declaration, and remember it in case Redis loses its data."""
        await self._drive(self._change_steps(change), "declare")
        self._declared[key] = change

    async def declare_exchange(self, exchange: Exchange) -> None:
        await self._declare(f"exchange {exchange.name}", lambda t: t.declare_exchange(exchange))

    async def declare_queue(self, queue: Queue) -> None:
        await self._declare(f"queue {queue.name}", lambda t: t.declare_queue(queue))
        if queue.auto_delete:
            self._auto_delete.add(queue.name)

    async def bind(self, binding: Binding) -> None:
        await self._declare(f"bind {binding}", lambda t: t.bind(binding))

    async def unbind(self, binding: Binding) -> None:
        await self._drive(self._change_steps(lambda t: t.unbind(binding)), "unbind")
        self._declared.pop(f"bind {binding}", None)

    async def delete_queue(self, name: str) -> None:
        """Remove the queue, its messages and bindings; its dead letters stay for inspection."""
        await self._drive(self._change_steps(lambda t: t.delete_queue(name), name), "delete")
        self._auto_delete.discard(name)
        self._declared.pop(f"queue {name}", None)

    # -- producing ----------------------------------------------------------------------------
    def _publish_steps(
        self, items: Sequence[Outgoing], payloads: Sequence[bytes]
    ) -> Steps[list[int]]:
        """The publish algorithm, as steps that the async and sync drivers share.

        Each chunk is checked against the topology version it was routed under; the chunks are
        sent together, and those refused (once the version changed, every later one is) are
        routed again on the reloaded topology.
        """
        counts = [0] * len(items)
        pending = list(range(len(items)))
        for _ in range(_PUBLISH_ATTEMPTS):
            fresh = self._topology is None
            if self._topology is None:
                self._topology = yield _LOAD
                if self._declared and self._topology.epoch != self._epoch:
                    yield from self._redeclare_steps()
                    self._topology = yield _LOAD
            version, topology, _ = self._topology
            try:
                plans = topology.plan([items[i] for i in pending])
            except TransportError:
                if fresh:
                    raise
                self._topology = None  # maybe declared elsewhere since: look again
                continue
            plan_of = dict(zip(pending, plans, strict=True))
            chunks: list[list[int]] = []  # the item indexes of each chunk, as it is built
            built = lua.publish_chunks(self.prefix, version, pending, plans, items, payloads)
            replies = yield _Step("publish", calls=_noting(built, chunks))
            pending = []
            for indexes, reply in zip(chunks, replies, strict=True):
                stored, dropped = lua.dropped_items(reply)
                if stored < 0:  # routed under an old topology: route again
                    pending += indexes
                    continue
                for index in indexes:
                    counts[index] = len(plan_of[index])
                for ordinal in dropped:  # a keyed item whose key was recorded: it counts 0
                    counts[indexes[ordinal]] = 0
            if not pending:
                return counts
            self._topology = None
        raise TransportError("the topology kept changing during this publish; try again")

    async def publish_batch(self, items: Sequence[Outgoing]) -> list[int]:
        if not items:
            return []
        payloads = [item.envelope() for item in items]  # may raise before any change
        return await self._drive(self._publish_steps(items, payloads), "publish")

    def publish_sync(self, items: Sequence[Outgoing]) -> list[int]:
        """Publish on the calling thread's own connection, no event loop: written ahead of
        its reply within ``confirm_window`` (:mod:`.writebehind`; every count is then 1), else
        (or when an item carries a ``dedup_key``) one round trip."""
        if not items:
            return []
        if (
            len(items) == 1
            and self._topology is not None
            and self.sync_publish_window > 0
            and items[0].dedup_key is None
        ):
            return self._publish_one_sync(items[0], self._topology)
        payloads = [item.envelope() for item in items]
        steps = self._publish_steps(items, payloads)
        if self.sync_publish_window <= 0 or any(item.dedup_key for item in items):
            return self._drive_sync(steps, "publish")  # a keyed send's count says if it was kept
        self._send_behind(steps, items, payloads)
        return [1] * len(items)

    def _send_behind(
        self, steps: Steps[list[int]], items: Sequence[Outgoing], payloads: Sequence[bytes]
    ) -> None:
        """Run ``steps`` up to their publish (the topology loaded first if need be) and write
        that ahead of its reply (:mod:`.writebehind`)."""
        behind = self._write_behind()
        with self._errors("publish"):
            step = next(steps)
            while step.script != "publish" or step.calls is None:  # the topology, first
                behind.drain_for_blocking_use()
                step = steps.send(self._run_sync(step))
            behind.send(steps, step, items, payloads)

    def _publish_one_sync(self, item: Outgoing, stored: lua.StoredTopology) -> list[int]:
        """A plain ``.delay()`` (one message, no dedup key, the topology loaded): its PUBLISH
        call built at once and checked by :meth:`_one_steps`, not through the batch's chunking
        (its generators, item indexes and per-chunk bookkeeping): 96-109 against 111-123 us of
        CPU per ``.delay()`` (five interleaved pairs of 20,000 sends, a 2-core machine).
        Anything else, or a route that fails on this topology, takes the batch path, which
        reloads it."""
        version, topology, _ = stored
        payload = item.envelope()
        try:
            [plan] = topology.plan([item])
        except TransportError:  # maybe declared elsewhere since: the batch path looks again
            plan = None
        if plan is None:
            steps = self._publish_steps([item], [payload])
        else:
            steps = self._one_steps(
                item, payload, lua.publish_one(self.prefix, version, item, payload, plan)
            )
        self._send_behind(steps, [item], [payload])
        return [1]

    def _one_steps(self, item: Outgoing, payload: bytes, args: tuple[Any, ...]) -> Steps[list[int]]:
        """:meth:`_publish_one_sync`'s publish: done when Redis stored it; routed again on a
        reloaded topology (the batch path's steps) when it was routed under an old one."""
        replies = yield _Step("publish", calls=(args,))
        stored, _ = lua.dropped_items(replies[0])
        if stored >= 0:
            return [stored]
        self._topology = None
        return (yield from self._publish_steps([item], [payload]))

    def flush_sync(self) -> None:
        """Read this thread's window of sync sends to its end (:mod:`.writebehind`)."""
        local = self._thread_conns
        behind: WriteBehind | None = getattr(local, "behind", None)
        if behind is not None and getattr(local, "pid", None) == os.getpid():
            behind.flush()

    def put_raw(self, queue: str, payload: bytes, priority: int = 0) -> None:
        """Store raw bytes in a declared queue, bypassing encoding: for tests of poison messages
        (a payload no :class:`~celeriac.protocol.message.Message` could produce)."""
        client, scripts = self._sync_clients()
        keys = [self.prefix + key for key in lua.TOPOLOGY_KEYS]
        with self._errors("put_raw"):
            version, topology, _ = lua.decode_topology(*client.mget(keys))
            if queue not in topology.queues:
                raise KeyError(queue)
            stored = b"%d\0\0%s\0%s" % (priority, queue.encode(), payload)
            if scripts["publish"](args=[self.prefix, version, "", 1, queue, "", stored]) < 0:
                raise TransportError("the topology changed meanwhile; try again")

    # -- transient fan-out --------------------------------------------------------------------
    async def publish_transient(
        self, exchange: Exchange, routing_key: str, messages: Sequence[Message]
    ) -> None:
        """PUBLISH each message on the exchange's channel (kombu's name); to a direct
        exchange, LPUSH it onto the lists bound with the key, as kombu does."""
        if not messages:
            return
        wires = fanout.envelopes(exchange.name, routing_key, messages)  # may raise: nothing sent
        with self._errors("publish_transient"):
            clients = await self._clients()
            if exchange.type == "direct":
                await direct.publish(
                    clients.client,
                    clients.scripts["push_direct"],
                    self.global_keyprefix,
                    exchange.name,
                    routing_key,
                    wires,
                    self.transient_retention,
                )
            else:
                channel = self.channels.publish(exchange.name, routing_key)
                await fanout.publish(clients.scripts["publish_fanout"], channel, wires)

    def listen(
        self, exchange: Exchange, patterns: Sequence[str] = ("#",), *, buffer: int = DEFAULT_BUFFER
    ) -> Listener:
        if exchange.type == "direct":
            return direct.DirectListener(self, exchange, patterns, buffer)
        return fanout.RedisListener(self, exchange, patterns, buffer)

    def opened(self, listener: fanout.RedisListener | direct.DirectListener) -> None:
        """A listener of this instance opened (it is closed with the transport)."""
        self._listeners.add(listener)

    def closed(self, listener: fanout.RedisListener | direct.DirectListener) -> None:
        self._listeners.discard(listener)

    # -- consuming ----------------------------------------------------------------------------
    async def get(self, queues: Sequence[str], max_count: int, timeout: float) -> list[Delivery]:
        """Lease up to ``max_count`` messages, waiting up to ``timeout`` for the first.

        Between claims it blocks in ``BLPOP`` on the queues' notify lists, for no longer than
        the time until the next delayed message or lease in these queues falls due, so it never
        polls and still wakes for a countdown that ends while it waits. The claim that follows
        each ``BLPOP`` is sent with it (:mod:`celeriac.transports.redis.wake`).
        """
        if max_count <= 0 or not queues:
            return []
        wanted = list(dict.fromkeys(queues))
        clients = await self._clients()
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = now + max(timeout, 0.0)
        notify = [self.queue_key(queue, "notify") for queue in wanted]
        wake: tuple[list[str], float] | None = None
        # The last claim on these queues came back short, so they were empty then: wait for a
        # publish at once (the claim rides behind the BLPOP) rather than claim first and find
        # nothing, a round trip that an idle worker's every task used to pay. Anything
        # published since pushed the notify list, so the BLPOP returns at once for it.
        key = tuple(wanted)
        empty_until = self._emptied.pop(key, None)
        if empty_until is not None and empty_until > now and timeout > 0:
            wait = min(deadline, empty_until) - now
            wake = (notify, max(1, math.ceil(wait * 1000)) / 1000)
        while True:
            deliveries, empty, next_due, epoch = await self._claim_cancel_safe(
                clients, wanted, max_count, wake
            )
            if empty:
                due = loop.time() + next_due if next_due is not None else math.inf
                self._emptied[key] = due
            if deliveries:
                return deliveries
            if self._declared and epoch != self._epoch:  # Redis lost its data: see _redeclare
                await self._drive(self._redeclare_steps(), "declare")
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            wait = remaining if next_due is None else min(remaining, next_due + 0.001)
            # BLPOP counts in whole milliseconds and reads 0 as "forever": never less than 1 ms
            wake = (notify, max(1, math.ceil(wait * 1000)) / 1000)

    async def _claim_cancel_safe(
        self,
        clients: _LoopClients,
        queues: list[str],
        max_count: int,
        wake: tuple[list[str], float] | None = None,
    ) -> tuple[list[Delivery], bool, float | None, str]:
        """Run one claim to its end even if the caller is cancelled, then give back its haul.

        A claim waiting behind a ``BLPOP`` (``wake``) is released at once on cancellation, with
        ``CLIENT UNBLOCK``, rather than at the end of the wait.
        """
        client_id: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(self._claim(clients, queues, max_count, wake, client_id))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self.abandon(task)
            if wake is not None and not task.done():
                unblock = asyncio.get_running_loop().create_task(self._unblock(clients, client_id))
                self._returning.add(unblock)
                unblock.add_done_callback(self._returning.discard)
            raise

    async def _unblock(self, clients: _LoopClients, client_id: asyncio.Future[int]) -> None:
        """End the ``BLPOP`` of a cancelled wait, so its claim runs (and is given back) now."""
        try:
            ident = await client_id
            await clients.client.execute_command("CLIENT", "UNBLOCK", ident)
        except (asyncio.CancelledError, redis.RedisError, OSError) as exc:
            # the wait ended (or failed) by itself: nothing is left blocked
            logger.debug("no BLPOP to unblock: %r", exc)

    def abandon(self, task: asyncio.Future[Any]) -> None:
        """A cancelled get's claim runs on: its haul is given back once it ends (and
        :meth:`stop_consuming` waits for that)."""
        task.add_done_callback(self._give_back)
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned.discard)

    async def stop_consuming(self, queue: str) -> None:
        """Nothing is held between two ``get`` calls; this waits until the claims of cancelled
        gets have ended and what they took is back in its queues."""
        while self._abandoned or self._returning:
            await asyncio.gather(*self._abandoned, *self._returning, return_exceptions=True)

    def _give_back(self, task: asyncio.Future[tuple[list[Delivery], Any, Any, Any]]) -> None:
        """Requeue what a cancelled get() claimed, so it need not wait for its lease to end."""
        if task.cancelled() or task.exception() is not None:
            return
        abandoned = task.result()[0]
        if not abandoned:
            return

        async def requeue() -> None:
            try:
                await self.requeue(abandoned)
            except TransportError as exc:
                logger.warning("could not requeue %d abandoned deliveries: %s", len(abandoned), exc)

        returning = asyncio.get_running_loop().create_task(requeue())
        self._returning.add(returning)
        returning.add_done_callback(self._returning.discard)

    async def _claim(
        self,
        clients: _LoopClients,
        queues: list[str],
        max_count: int,
        wake: tuple[list[str], float] | None = None,
        client_id: asyncio.Future[int] | None = None,
    ) -> tuple[list[Delivery], bool, float | None, str]:
        """One claim script call; after a ``BLPOP`` on ``wake = (notify lists, seconds)`` when
        given, in the same write (``client_id`` receives the blocked connection's id)."""
        self._rotation += 1
        args = [self.prefix, self.lease_seconds, self.max_deliveries, max_count, self._rotation]
        script = clients.scripts["claim"]
        if wake is None:
            # early acks waiting ride this claim's write too (a busy worker claims often)
            riders = self._early_acks.take() if self._early_acks is not None else []
            calls: list[tuple[str, Sequence[Any]]] = []
            if riders:
                calls.append(("settle", self.settle_args("ack", "", riders)))
            calls.append(("claim", [*args, *queues]))
            try:
                with self._errors("get"):
                    replies = await self._scripts(clients, calls)
                    reply = raised(replies[-1])
            except Exception as exc:
                if riders and self._early_acks is not None:
                    self._early_acks.failed(exc, riders)
                raise
            if riders:
                await self._carried(riders, replies[0])
        else:
            notify, seconds = wake
            held = client_id or asyncio.get_running_loop().create_future()
            riders = self._early_acks.take() if self._early_acks is not None else []
            before = (
                (clients.scripts["settle"], self.settle_args("ack", "", riders)) if riders else None
            )
            try:
                with self._errors("waiting for messages"):
                    attempt = 0
                    while True:
                        link = await self._link(clients, waiter=True)
                        if not held.done():
                            held.set_result(int(link.client_id or 0))
                        try:
                            reply, ahead = await wait_then_claim(
                                link,
                                notify,
                                seconds,
                                script,
                                [*args, *queues],
                                _BLOCK_GRACE,
                                before,
                            )
                            break
                        except redis.ConnectionError:
                            # a link the server closed (a restart), seen when this write failed
                            attempt += 1
                            if attempt > self._retries:
                                raise
            except Exception as exc:
                if riders and self._early_acks is not None:
                    self._early_acks.failed(exc, riders)
                raise
            finally:
                if not held.done():
                    held.cancel()
            if riders:
                await self._carried(riders, ahead)
        deliveries, dead = lua.claimed(reply, queues)
        self._report_dead_letters(dead)  # here: a cancelled get's claim still reports them
        empty, next_due = lua.drained(reply)
        return deliveries, empty, next_due, bytes(reply[1]).decode()

    def fetcher(self) -> Fetcher | None:
        """A blocking consumer for this process (:mod:`.fetcher`), on a connection of its own;
        ``None`` in kombu's layout, whose claim is another script."""
        if self.layout != NATIVE_LAYOUT:
            return None
        client, scripts = self._sync_clients()
        pool = client.connection_pool
        return Fetcher(
            self,
            lambda: pool.connection_class(**pool.connection_kwargs),
            {"claim": scripts["claim"], "settle": scripts["settle"]},
            retries=self._retries,
            timeout=self._connection.get("socket_timeout"),
        )

    async def unblock(self, client_id: int) -> None:
        with self._errors("unblock"):
            clients = await self._clients()
            await clients.client.execute_command("CLIENT", "UNBLOCK", client_id, "ERROR")

    def carry_early_acks(self, source: EarlyAcks) -> None:
        """Early acks ride the write of each wait for messages (:mod:`.wake`)."""
        self._early_acks = source

    async def _carried(self, riders: list[Delivery], reply: Any) -> None:
        """The end of early acks that rode a wait: a refused settle (Redis restarted and
        forgot the script) is sent again the usual way."""
        if isinstance(reply, Exception):
            try:
                await self.ack(riders)
            except TransportError as exc:
                if self._early_acks is not None:
                    self._early_acks.failed(exc, riders)
            return
        self.warn_stale("ack", reply, riders)

    def settle_args(self, op: str, argument: Any, deliveries: Sequence[Delivery]) -> list[Any]:
        args: list[Any] = [self.prefix, op, argument]
        for delivery in deliveries:
            message_id, token = delivery.tag
            args += (delivery.queue, message_id, token)
        return args

    async def _settle(self, op: str, argument: Any, deliveries: Sequence[Delivery]) -> None:
        """One settle script call for the batch; deliveries no longer held are only warned of."""
        if not deliveries:
            return
        args = self.settle_args(op, argument, deliveries)
        with self._errors(op):
            clients = await self._clients()
            stale = await self._script(clients, "settle", args)
        self.warn_stale(op, stale, deliveries)

    async def _link(self, clients: _LoopClients, waiter: bool = False) -> Link:
        """This loop's pipelined connection (``waiter``: the one its waits for messages block
        on, which knows its ``CLIENT ID``), opened on first use and again once it broke."""
        link = clients.waiter if waiter else clients.link
        if link is not None and not link.closed:
            return link
        async with clients.link_lock:  # one opening at a time; the others take its link
            link = clients.waiter if waiter else clients.link
            if link is None or link.closed:
                pool = clients.client.connection_pool
                timeout = None if waiter else self._connection.get("socket_timeout")
                link = await Link.open(pool, timeout, identify=waiter)
                if waiter:
                    clients.waiter = link
                else:
                    clients.link = link
        return link

    async def _script(self, clients: _LoopClients, name: str, args: Sequence[Any]) -> Any:
        """One script's reply through :meth:`_scripts`; an error reply raised."""
        return raised((await self._scripts(clients, [(name, args)]))[0])

    async def _scripts(
        self, clients: _LoopClients, calls: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[Any]:
        """Each ``(script name, args)`` run with ``EVALSHA``, all in one write on this loop's
        :class:`~.link.Link`; their replies in order, an error reply as the exception in its
        place. A script Redis does not have (``NOSCRIPT``: it restarted) is run again through
        redis-py, which loads it. A broken link (or a ``READONLY`` master that a failover made a
        replica, as redis-py's Sentinel connection treats it) is opened again and the write
        sent again, up to the transport's retries, as redis-py's retry does."""
        packed = b"".join(
            pack_command(("EVALSHA", clients.scripts[name].sha, 0, *args)) for name, args in calls
        )
        attempt = 0
        while True:
            link = await self._link(clients)
            try:
                replies = await link.call(packed, len(calls))
                if any(read_only(reply) for reply in replies):
                    link.close()
                    raise redis.ConnectionError(READ_ONLY)
                break
            except (redis.ConnectionError, redis.TimeoutError):
                attempt += 1
                if attempt > self._retries:
                    raise
        for index, reply in enumerate(replies):
            if isinstance(reply, redis.ResponseError) and str(reply).startswith("NOSCRIPT"):
                name, args = calls[index]
                try:
                    replies[index] = await clients.scripts[name](args=list(args))
                except redis.ResponseError as exc:
                    if read_only(exc):  # a replica forgets scripts when it syncs
                        link.close()
                        raise redis.ConnectionError(READ_ONLY) from exc
                    replies[index] = exc
        return replies

    @staticmethod
    def warn_stale(op: str, stale: Any, deliveries: Sequence[Delivery]) -> None:
        """Settling skips what is no longer held: warned of, never raised."""
        if stale:
            gone = {int(i) for i in stale}
            tags = [d.tag for d in deliveries if d.tag[0] in gone]
            logger.warning(
                "%s skipped for %d deliveries no longer held (lease expired and re-leased, "
                "or already settled): %s",
                op,
                len(tags),
                tags[:10],
            )

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self._settle("ack", "", deliveries)

    async def requeue(self, deliveries: Sequence[Delivery], delay: float = 0.0) -> None:
        await self._settle("requeue", max(float(delay), 0.0), deliveries)

    async def reject(self, deliveries: Sequence[Delivery], reason: str) -> None:
        await self._settle("reject", reason, deliveries)

    async def extend(self, deliveries: Sequence[Delivery], seconds: float | None = None) -> None:
        await self._settle("extend", self.lease_seconds if seconds is None else seconds, deliveries)

    # -- inspection ---------------------------------------------------------------------------
    async def size(self, queue: str) -> int:
        with self._errors("size"):
            clients = await self._clients()
            return int(await clients.scripts["size"](args=[self.prefix, queue]))

    async def purge(self, queue: str) -> int:
        """Remove the waiting messages (due, delayed or with an expired lease); leased ones stay."""
        with self._errors("purge"):
            clients = await self._clients()
            return int(await clients.scripts["purge"](args=[self.prefix, queue]))

    def dead_letter_key(self, queue: str) -> str:
        """The list of ``queue``'s dead letters, newest first."""
        return f"{self.prefix}dlq:{queue}"

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        if limit <= 0:
            return []
        with self._errors("dead_letters"):
            clients = await self._clients()
            entries = await clients.client.lrange(self.dead_letter_key(queue), 0, limit - 1)
        return [lua.dead_letter(queue, bytes(entry)) for entry in entries]

    async def remove_dead_letters(self, queue: str, letters: Sequence[DeadLetter]) -> int:
        """Find the entries with these ids (a digest of each entry: see
        :func:`~celeriac.transports.redis.scripts.entry_id`), newest first, a page at a time,
        and ``LREM`` each by its value: letters pushed meanwhile move the others along, never
        onto them. Stops once every id was found."""
        wanted = {letter.id for letter in letters if letter.id is not None}
        if not wanted:
            return 0
        key = self.dead_letter_key(queue)
        removed = 0
        with self._errors("remove_dead_letters"):
            client = (await self._clients()).client
            start = 0
            while wanted:
                page = await client.lrange(key, start, start + _LETTER_PAGE - 1)
                found = [e for e in map(bytes, page) if lua.entry_id(e) in wanted]
                if found:
                    pipe = client.pipeline(transaction=False)
                    for entry in found:
                        pipe.lrem(key, 1, entry)
                        wanted.discard(lua.entry_id(entry))
                    gone = sum(int(n) for n in await pipe.execute())
                    removed += gone
                    start -= gone  # the entries after them moved up
                if len(page) < _LETTER_PAGE:
                    break
                start += len(page)
        return removed

    async def oldest_message_age(self, queue: str) -> float | None:
        """Seconds since the longest-waiting ready message became ready, to the second (each
        queue keeps a clock of when its messages became ready: see
        :mod:`~celeriac.transports.redis.scripts`), or since a due delayed message fell due or
        an expired lease ended; 0.0 when none is ready. One script call of a few index seeks.
        ``None`` for a queue whose ready messages were all made ready by a celeriac without
        the clock."""
        with self._errors("oldest_message_age"):
            clients = await self._clients()
            reply = await clients.scripts["age"](args=[self.prefix, queue])
        text = bytes(reply).decode() if isinstance(reply, bytes) else str(reply)
        return float(text) if text else None


__all__ = ["DEFAULT_KEY_PREFIX", "RedisTransport"]


def _noting(chunks: Iterable[tuple[list[int], T]], noted: list[list[int]]) -> Iterator[T]:
    """The calls of lazily built ``chunks``, noting each one's item indexes as it is taken."""
    for indexes, call in chunks:
        noted.append(indexes)
        yield call
