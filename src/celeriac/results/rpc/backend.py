"""``rpc://``: results sent back to the caller as messages, never stored.

How a result travels (Celery's semantics and, over RabbitMQ, its message layout, so that either
side may be Celery's; over Redis, see :mod:`.redis_link`):

1. The first send of a process whose backend is ``rpc://`` declares that process's reply queue,
   ``celeriac.reply.<uuid>``, and starts consuming it (one round trip, once). Every task the
   process sends then carries ``reply_to=<that queue>`` and ``correlation_id=<task id>``; a
   task sent *from a running task* (a retry, a subtask) inherits that task's ``reply_to``, and
   one the worker sends after a task ran (a chain's next step, a ``link``) goes where that
   task's result went (the worker's backend remembers it), so a chain's final result reaches
   the process that started the chain.
2. The worker's backend publishes each record of that task (SUCCESS, FAILURE...) to
   the request's ``reply_to`` through the default exchange, as a transient message whose body
   is the record (``task_id``, ``status``, ``result``, ``traceback``, ``children``...) in the
   result serializer, with ``correlation_id`` = task id. A batch of results from the worker's
   result writer is one batch of publishes and one wait for the broker's confirms, so a
   stored result is in the reply queue when ``store_many`` returns (``acks_late`` relies on
   that).
3. The caller consumes its queue on the backend's own thread and keeps the latest record per
   task id in memory (:class:`~celeriac.results.rpc.replies.Replies`); ``get()`` waits on a
   ``threading.Event`` and ``aget()`` on a future of its own loop. Nothing polls, and a sync
   caller (a Django view) pays for no event loop per call.

Why a named queue, not RabbitMQ's direct reply-to (``amq.rabbitmq.reply-to``): direct reply-to
works only when the channel that *publishes* the task is the channel that consumes the replies,
but tasks are published by the transport's connection and replies consumed by this backend's;
and it keeps no reply whose caller is briefly disconnected. The queue is client-named,
non-durable and not exclusive, with ``x-expires`` (``reply_queue_expires``, default 300 s):
after a dropped connection this backend re-declares the *same* queue and consumes again, and
replies published meanwhile wait there; once the process is gone RabbitMQ deletes the queue
after that time without a consumer. ``close()`` deletes it at once.

Where it connects (:mod:`.route`): ``rpc://`` (no host) means the app's broker, RabbitMQ or
Redis (over Redis, each reply queue is a Redis list: :mod:`.redis_link`);
``rpc://user:password@host:port/vhost`` names a RabbitMQ of its own. URLs, TLS options and
failover lists (``;``) are parsed by the broker's own URL module, shared with the transport; a
password never reaches a log or a repr. Options (``result_backend_transport_options``):
``reply_queue_expires`` (seconds; over Redis, how long a reply list outlives its last reply),
``max_cached_results`` (default 100,000 records kept for reading), and, over RabbitMQ, the AMQP
connection options of ``amqp_url`` (``heartbeat``, ``connect_timeout``, ``ssl``...). An unknown
option fails at construction, named.

Limits (what cannot hold when results are messages to one process):

* a result reaches only the process that sent the task: ``AsyncResult(id).get()`` in another
  process (or after a restart) stays PENDING and times out;
* the caller keeps replies in memory only: records older than ``result_expires`` or past
  ``max_cached_results`` are dropped (they read PENDING again);
* a record that does not carry its task's ``reply_to`` has nowhere to go and is not sent (the
  worker's records carry it: results, retries, and revoked or expired tasks it never ran; a
  record stored by hand without one is dropped, logged at debug level);
* chords need a store that every worker shares (a counter of finished members, the members'
  results): a chord is refused at send time with :data:`CHORD_LIMIT`, and ``join_chord`` and
  ``incr`` raise it too. A group works: its members' results come to the caller, and its
  member ids are saved in the caller's memory, so ``GroupResult.restore(id)`` works in the
  process that sent it and nowhere else.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar, TypeVar

from celeriac.errors import BackendError, DecodeError, ImproperlyConfigured
from celeriac.results.base import Backend, ResultMeta, too_large
from celeriac.results.rpc.replies import Replies
from celeriac.results.rpc.route import AMQP_OPTIONS, Link, Reply, route_for

logger = logging.getLogger(__name__)

__all__ = ["CHORD_LIMIT", "RPCBackend"]

T = TypeVar("T")

CHORD_LIMIT = (
    "rpc:// results go to the calling process only, and a chord needs results every worker "
    "can read: use redis:// or sqlite:// results for chords"
)

_OWN_OPTIONS = {"reply_queue_expires", "max_cached_results"}
DEFAULT_QUEUE_EXPIRES = 300.0
#: Task ids whose reply queue a worker remembers for the sends that follow them.
MAX_REMEMBERED = 100_000
#: Groups whose member ids this process keeps for ``GroupResult.restore``.
MAX_GROUPS = 10_000


def _has_chord(value: Any, depth: int = 0) -> bool:
    """Whether a message's embed (signature dicts, nested) holds a chord anywhere."""
    if depth > 50:
        return False
    if isinstance(value, Mapping):
        if value.get("subtask_type") == "chord" or value.get("chord") is not None:
            return True
        options = value.get("options")
        if isinstance(options, Mapping) and options.get("chord") is not None:
            return True
        return any(_has_chord(v, depth + 1) for v in value.values() if isinstance(v, list | dict))
    if isinstance(value, list | tuple):
        return any(_has_chord(v, depth + 1) for v in value)
    return False


class RPCBackend(Backend):
    """Results as messages to the caller's reply queue; see the module docstring."""

    schemes: ClassVar[tuple[str, ...]] = ("rpc",)
    replies: ClassVar[bool] = True

    def __init__(
        self,
        url: str = "rpc://",
        *,
        broker_url: str | None = None,
        broker_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(url, **kwargs)
        unknown = sorted(set(self.options) - AMQP_OPTIONS - _OWN_OPTIONS)
        if unknown:
            known = ", ".join(sorted(AMQP_OPTIONS | _OWN_OPTIONS))
            raise ImproperlyConfigured(f"unknown rpc:// option(s) {unknown}; known: {known}")
        amqp = {k: v for k, v in self.options.items() if k in AMQP_OPTIONS}
        self._route = route_for(url, broker_url, broker_options or {}, amqp)
        #: The AMQP targets when replies go over RabbitMQ; empty over Redis.
        self._targets = self._route.targets
        try:
            self._queue_expires = float(
                self.options.get("reply_queue_expires", DEFAULT_QUEUE_EXPIRES)
            )
            max_cached = int(self.options.get("max_cached_results", 100_000))
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"rpc:// option: {exc}") from None
        self._replies = Replies(max_size=max_cached, max_age=self.expires)
        #: Member ids of the groups this process sent (see the module docstring).
        self._groups: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._link = self._new_link()
        self._reply_queue: str | None = None
        #: task id -> the queue its result was sent to, for the sends that follow it
        self._sent_to: OrderedDict[str, str] = OrderedDict()

    def _new_link(self) -> Link:
        return self._route.link(
            f"celeriac.reply.{uuid.uuid4().hex}", self._queue_expires, self._on_reply
        )

    def __repr__(self) -> str:
        return f"<RPCBackend {self._link.display}>"

    # -- fork and loop ------------------------------------------------------------------------
    def _check_fork(self) -> None:
        """A forked child (a prefork pool) must not use its parent's connection or thread."""
        if os.getpid() != self._pid:
            with self._lock:
                if os.getpid() != self._pid:
                    self._pid = os.getpid()
                    self._link = self._new_link()
                    self._reply_queue = None
                    self._replies.clear()

    def _call(self, call: Callable[[], T], action: str) -> T:
        self._check_fork()
        try:
            return call()
        except (BackendError, ImproperlyConfigured):
            raise
        except Exception as exc:
            raise BackendError(f"rpc results on {self._link.display}: {action}: {exc}") from exc

    # -- the caller's side ----------------------------------------------------------------------
    @property
    def reply_to(self) -> str:
        """This process's reply queue, declared and consumed on first use (before any task is
        sent with it, so that no reply can be published to a queue that does not exist)."""
        self._check_fork()
        name = self._reply_queue
        if name is None:
            with self._lock:
                if self._reply_queue is None:
                    self._call(self._link.start, "opening the reply queue")
                    self._reply_queue = self._link.queue_name
                name = self._reply_queue
        return name

    def _on_reply(self, body: bytes, content_type: str | None, encoding: str | None) -> None:
        """One reply message from the consumer (runs on the link's loop thread)."""
        try:
            value = self.serializers.loads(
                body, content_type or "application/json", encoding or "utf-8", self.accept
            )
            meta = ResultMeta.from_dict(value)
        except DecodeError as exc:
            logger.warning("rpc results: dropped an undecodable reply: %s", exc)
            return
        self._replies.put(meta)

    def check_send(self, embed: Mapping[str, Any]) -> None:
        if embed.get("chord") is not None or (embed.get("chain") and _has_chord(embed["chain"])):
            raise ImproperlyConfigured(CHORD_LIMIT)

    def get_meta(self, task_id: str) -> ResultMeta:
        return self._replies.get(task_id)

    def get_many(self, task_ids: Sequence[str]) -> list[ResultMeta]:
        return [self._replies.get(task_id) for task_id in task_ids]

    def wait_for(self, task_id: str, timeout: float | None = None) -> ResultMeta:
        self._check_fork()
        return self._replies.wait(task_id, timeout)

    async def aget_meta(self, task_id: str) -> ResultMeta:
        return self._replies.get(task_id)

    async def await_for(self, task_id: str, timeout: float | None = None) -> ResultMeta:
        self._check_fork()
        return await self._replies.await_(task_id, timeout)

    # -- the worker's side ----------------------------------------------------------------------
    def _outgoing(self, metas: Sequence[ResultMeta]) -> list[Reply]:
        """One reply per record that says where it goes (the others have no reader)."""
        now = time.time()
        items: list[Reply] = []
        for meta in metas:
            reply_to = meta.reply_to
            if not reply_to:
                logger.debug("rpc results: %s has no reply_to; not sent", meta.task_id)
                continue
            if meta.ready and meta.date_done is None:
                meta = replace(meta, date_done=now)
            content_type, encoding, body = self._reply_body(meta)
            if self.max_bytes is not None and len(body) > self.max_bytes:
                meta = too_large(meta, len(body), self.max_bytes)
                content_type, encoding, body = self._reply_body(meta)
            items.append((reply_to, meta.task_id, content_type, encoding, body))
        if items:
            self._remember(items)
        return items

    def _reply_body(self, meta: ResultMeta) -> tuple[str, str, bytes]:
        data = meta.to_dict()
        del data["reply_to"]  # where it went is no part of the record
        return self.serializers.dumps(data, self.serializer)

    def _remember(self, items: Sequence[Reply]) -> None:
        """Where each task's result went: a chain's next step is sent after its step ran, with
        no running task to inherit ``reply_to`` from, and asks :meth:`reply_to_for`."""
        with self._lock:
            sent_to = self._sent_to
            for reply_to, task_id, *_ in items:
                sent_to[task_id] = reply_to
                sent_to.move_to_end(task_id)
            while len(sent_to) > MAX_REMEMBERED:
                sent_to.popitem(last=False)

    def reply_to_for(self, parent_id: str | None) -> str:
        if parent_id is not None:
            with self._lock:
                found = self._sent_to.get(parent_id)
            if found is not None:
                return found
        return self.reply_to

    def store(self, meta: ResultMeta) -> None:
        self.store_many([meta])

    def store_many(self, metas: list[ResultMeta]) -> None:
        items = self._outgoing(metas)
        if items:
            link = self._link
            self._call(lambda: link.send(items), f"sending {len(items)} results")

    async def astore(self, meta: ResultMeta) -> None:
        items = self._outgoing([meta])
        if not items:
            return
        self._check_fork()
        try:
            await self._link.asend(items)
        except Exception as exc:
            raise BackendError(
                f"rpc results on {self._link.display}: sending a result: {exc}"
            ) from exc

    # -- the store API, as far as replies can serve it ----------------------------------------
    def _write(self, task_id: str, data: bytes, expires_at: float | None) -> None:
        raise NotImplementedError("rpc:// sends records (store/store_many); it writes none")

    def _read(self, task_id: str) -> bytes | None:
        meta = self._replies.find(task_id)
        return None if meta is None else self._encode(meta)

    def _delete(self, task_id: str) -> None:
        self._replies.forget(task_id)

    def _incr(self, key: str, amount: int, expires_at: float | None) -> int:
        raise NotImplementedError(CHORD_LIMIT)

    def join_chord(
        self, group_id: str, member_id: str, *, index: int | None = None
    ) -> tuple[bool, int]:
        raise NotImplementedError(CHORD_LIMIT)

    def save_group(self, group_id: str, task_ids: Sequence[str]) -> None:
        """Kept in this process's memory: only this process receives the members' results."""
        with self._lock:
            self._groups[group_id] = [str(t) for t in task_ids]
            while len(self._groups) > MAX_GROUPS:  # the oldest go first, as replies do
                del self._groups[next(iter(self._groups))]

    def restore_group(self, group_id: str) -> list[str] | None:
        with self._lock:
            ids = self._groups.get(group_id)
        return None if ids is None else list(ids)

    def delete_group(self, group_id: str) -> None:
        with self._lock:
            self._groups.pop(group_id, None)

    def close(self) -> None:
        """Delete the reply queue (if this process made one), close the connection and thread."""
        if os.getpid() != self._pid:
            return  # a fork's inherited link is not ours to close
        with self._lock:
            link, self._reply_queue = self._link, None
            self._link = self._new_link()
        link.close()
