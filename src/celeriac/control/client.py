"""``app.control``: Celery's remote-control client, with replies, in Celery's pidbox layout.

Every method has Celery's name, arguments and return value: the control commands are casts
unless given ``reply=True`` (then they return ``[{node: reply}, ...]``), ``ping`` and
``broadcast(..., reply=True)`` gather replies for ``timeout`` seconds or until every node of
``destination`` answered, and ``inspect()`` merges them by node (:mod:`.inspect`).

``revoke`` also keeps the revoke on the broker for ``worker_revoke_expires`` seconds
(:mod:`.revokes`), so that a worker started later, or restarted, honours it too; and
``revoke(root_id, by="root_id")`` revokes every task of the workflow started from that root
(``by="parent_id"``: every task one task sent) — celeriac's own argument, as Celery has none.

The client is synchronous, as Celery's is: it runs on a private event loop in a daemon thread
(one per ``Control``), with one broker connection kept for the process; calls from several
threads take turns on it. :meth:`Control.close` releases both (``app.close()`` should call it).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from celeriac.control.calls import ReplyCallback, call
from celeriac.control.inspect import Inspect
from celeriac.control.pidbox import ControlRequest, LamportClock, Mailbox
from celeriac.control.revokes import RevokeStore, check_by, open_revoke_store, revokes_for
from celeriac.control.revokes import revoke_expires as revoke_expires_of
from celeriac.utils.portal import Portal

if TYPE_CHECKING:
    from celeriac.app.base import Celeriac
    from celeriac.transports.base import Transport

logger = logging.getLogger("celeriac.control")
T = TypeVar("T")

TERM = "SIGTERM"
Replies = list[dict[str, Any]] | None


class Control:
    """Broadcast commands to workers and gather their replies. Reached as ``app.control``."""

    def __init__(self, app: Celeriac) -> None:
        self.app = app
        #: Celery's ``app.clock`` for remote control: forwarded by each request, moved past
        #: the clock of each reply.
        self.clock = LamportClock()
        self._portal: Portal | None = None
        self._transport: Transport | None = None
        self._store: RevokeStore | None = None
        self._store_opened = False
        self._lock = threading.Lock()
        self._turn: asyncio.Lock | None = None
        #: Reply queues being deleted after their call returned.
        self._cleanup: set[asyncio.Task[None]] = set()

    @property
    def mailbox(self) -> Mailbox:
        """The names in use: ``control_exchange`` is Celery's namespace (``celery``)."""
        return Mailbox(self.app.conf.control_exchange)

    # -- running on the private loop ------------------------------------------------------------
    def _run(self, make: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            if self._portal is None:
                self._portal = Portal("celeriac-control")
            portal = self._portal
        return portal.call(self._in_turn(make))

    async def _in_turn(self, make: Coroutine[Any, Any, T]) -> T:
        if self._turn is None:
            self._turn = asyncio.Lock()
        async with self._turn:
            return await make

    async def _connected(self) -> Transport:
        if self._transport is None:
            transport = self.app.create_transport()
            await transport.connect()
            self._transport = transport
        return self._transport

    def close(self) -> None:
        """Close the connection and the private loop (a later call opens them again)."""
        with self._lock:
            portal, self._portal = self._portal, None
        if portal is None:
            return
        transport, self._transport = self._transport, None
        store, self._store, self._store_opened = self._store, None, False

        async def release() -> None:
            if self._cleanup:
                await asyncio.wait(set(self._cleanup), timeout=5)
            if transport is not None:
                await transport.close()
            if store is not None:
                await store.close()

        try:
            portal.call(release(), timeout=5)
        except Exception as exc:
            logger.debug("closing the control client: %s", exc)
        finally:
            portal.close()
            self._turn = None

    # -- the general form -----------------------------------------------------------------------
    def broadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        destination: Sequence[str] | None = None,
        connection: Any = None,
        reply: bool = False,
        timeout: float = 1.0,
        limit: int | None = None,
        callback: ReplyCallback | None = None,
        channel: Any = None,
        pattern: str | None = None,
        matcher: str | None = None,
        **extra_kwargs: Any,
    ) -> Replies:
        """Send ``command`` to every worker, or to the nodes in ``destination``, or to those
        whose name matches ``pattern`` (``matcher``: ``glob`` or ``pcre``). With ``reply``,
        the replies as ``[{node: reply}, ...]``; ``limit`` defaults to the number of
        destinations. ``connection`` and ``channel`` are Celery's and are not used."""
        if destination is not None and not isinstance(destination, list | tuple):
            raise ValueError(f"destination must be a list/tuple, not {type(destination)}")
        if limit is None and destination:
            limit = len(destination)
        request = ControlRequest(
            method=command,
            arguments={**(arguments or {}), **extra_kwargs},
            destination=list(destination) if destination else None,
            pattern=pattern if pattern and matcher else None,
            matcher=matcher if pattern and matcher else None,
        )

        security = self.app.security

        async def send() -> Replies:
            return await call(
                await self._connected(),
                self.mailbox,
                request,
                reply=reply,
                timeout=timeout,
                limit=limit,
                callback=callback,
                clock=self.clock,
                cleanup=self._cleanup,
                signer=security.signer if security else None,
                verifier=security.verifier if security else None,
            )

        return self._run(send())

    def inspect(
        self,
        destination: str | Sequence[str] | None = None,
        timeout: float = 1.0,
        callback: ReplyCallback | None = None,
        connection: Any = None,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> Inspect:
        """Celery's ``app.control.inspect(...)``: see :class:`~celeriac.control.inspect.Inspect`."""
        return Inspect(
            destination, timeout, callback, connection, self.app, limit, pattern, matcher
        )

    def ping(
        self, destination: Sequence[str] | None = None, timeout: float = 1.0, **kwargs: Any
    ) -> list[dict[str, Any]]:
        """``[{node: {"ok": "pong"}}, ...]`` from the workers that answered in time."""
        replies = self.broadcast(
            "ping", arguments={}, destination=destination, timeout=timeout, reply=True, **kwargs
        )
        return replies or []

    # -- revokes --------------------------------------------------------------------------------
    def revoke(
        self,
        task_id: str | Sequence[str],
        destination: Sequence[str] | None = None,
        terminate: bool = False,
        signal: str | int = TERM,
        *,
        by: str = "id",
        **kwargs: Any,
    ) -> Replies:
        """Do not run these tasks; with ``terminate``, also stop them where they run (prefork
        kills the child; ``signal`` as Celery's). ``by="root_id"`` or ``"parent_id"``: the ids
        are workflows' roots or parents, and every task under them is revoked. Kept on the
        broker for ``worker_revoke_expires`` seconds, for workers that start later (unless
        ``destination`` names some workers: then only they are told)."""
        kind = check_by(by)
        ids = [task_id] if isinstance(task_id, str) else [str(i) for i in task_id]
        persisted = False
        if not destination:
            persisted = self._store_revokes(ids, kind)
        arguments: dict[str, Any] = {
            "task_id": ids[0] if isinstance(task_id, str) else ids,
            "terminate": terminate,
            "signal": signal,
        }
        if kind != "id":
            arguments["by"] = kind
        if persisted:
            arguments["persisted"] = True  # the workers need not store it again
        return self.broadcast("revoke", destination=destination, arguments=arguments, **kwargs)

    def terminate(
        self,
        task_id: str | Sequence[str],
        destination: Sequence[str] | None = None,
        signal: str | int = TERM,
        **kwargs: Any,
    ) -> Replies:
        return self.revoke(task_id, destination, terminate=True, signal=signal, **kwargs)

    def _store_revokes(self, ids: list[str], by: Any) -> bool:
        """Keep the revokes on the broker; False when its transport has no store."""
        expires = revoke_expires_of(self.app)

        async def store() -> bool:
            if self._store is None:
                self._store = open_revoke_store(self.app)
            if self._store is None:
                return False
            if not self._store_opened:
                await self._store.open()
                self._store_opened = True
            await self._store.add(revokes_for(ids, by, expires))
            return True

        return self._run(store())

    # -- the other control commands, as Celery names them ---------------------------------------
    def rate_limit(
        self,
        task_name: str,
        rate_limit: str | float | None,
        destination: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Replies:
        """A task type's rate limit on the workers now (``"10/m"``; ``None`` or 0 removes it)."""
        arguments = {"task_name": task_name, "rate_limit": rate_limit}
        return self.broadcast("rate_limit", destination=destination, arguments=arguments, **kwargs)

    def time_limit(
        self,
        task_name: str,
        soft: float | None = None,
        hard: float | None = None,
        destination: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Replies:
        arguments = {"task_name": task_name, "hard": hard, "soft": soft}
        return self.broadcast("time_limit", destination=destination, arguments=arguments, **kwargs)

    def add_consumer(
        self,
        queue: str,
        exchange: str | None = None,
        exchange_type: str = "direct",
        routing_key: str | None = None,
        options: dict[str, Any] | None = None,
        destination: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Replies:
        arguments = {
            "queue": queue,
            "exchange": exchange,
            "exchange_type": exchange_type,
            "routing_key": routing_key,
            **(options or {}),
        }
        return self.broadcast(
            "add_consumer", destination=destination, arguments=arguments, **kwargs
        )

    def cancel_consumer(
        self, queue: str, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> Replies:
        return self.broadcast(
            "cancel_consumer", destination=destination, arguments={"queue": queue}, **kwargs
        )

    def enable_events(self, destination: Sequence[str] | None = None, **kwargs: Any) -> Replies:
        return self.broadcast("enable_events", arguments={}, destination=destination, **kwargs)

    def disable_events(self, destination: Sequence[str] | None = None, **kwargs: Any) -> Replies:
        return self.broadcast("disable_events", arguments={}, destination=destination, **kwargs)

    def heartbeat(self, destination: Sequence[str] | None = None, **kwargs: Any) -> Replies:
        return self.broadcast("heartbeat", arguments={}, destination=destination, **kwargs)

    def election(self, id: str, topic: str, action: Any = None, connection: Any = None) -> None:
        self.broadcast("election", arguments={"id": id, "topic": topic, "action": action})

    def pool_grow(
        self, n: int = 1, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> Replies:
        return self.broadcast("pool_grow", arguments={"n": n}, destination=destination, **kwargs)

    def pool_shrink(
        self, n: int = 1, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> Replies:
        return self.broadcast("pool_shrink", arguments={"n": n}, destination=destination, **kwargs)

    def autoscale(
        self, max: int, min: int, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> Replies:
        return self.broadcast(
            "autoscale", arguments={"max": max, "min": min}, destination=destination, **kwargs
        )

    def shutdown(self, destination: Sequence[str] | None = None, **kwargs: Any) -> Replies:
        """Stop the workers (warm: running tasks finish)."""
        return self.broadcast("shutdown", arguments={}, destination=destination, **kwargs)

    def pool_restart(
        self,
        modules: Sequence[str] | None = None,
        reload: bool = False,
        reloader: Any = None,
        destination: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Replies:
        arguments = {"modules": modules, "reload": reload, "reloader": reloader}
        return self.broadcast(
            "pool_restart", arguments=arguments, destination=destination, **kwargs
        )

    def purge(self, connection: Any = None) -> int:
        """Remove every message waiting in the app's queues; how many were removed."""

        async def purge() -> int:
            transport = await self._connected()
            return sum([await transport.purge(q.name) for q in self.app.queues()])

        return self._run(purge())

    discard_all = purge
