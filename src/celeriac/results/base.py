"""The result backend contract, and the encoding of results and exceptions it shares.

A backend stores one :class:`ResultMeta` per task id and answers three questions: what is the
state now (``get_meta``), wake me when it is ready (``wait_for``), forget it (``forget``). The
encoding (serializer, exception layout) lives here once; a concrete backend only moves bytes:

* ``_write(task_id, data, expires_at)`` / ``_read(task_id)`` / ``_delete(task_id)``;
* ``_wait(task_id, timeout)``: block until the stored record is *ready* or the timeout passes.
  A backend with change notifications (Redis pub/sub, a condition variable) overrides it; the
  default polls with a short back-off, which is right only for local stores such as SQLite;
* ``_incr(key, amount, expires_at)``: an atomic counter, for group and chord bookkeeping.

Async twins (``aget_meta``, ``await_for``, ``astore``) default to the sync ones run in a thread;
backends with a native async client override them.

Exceptions are stored in Celery's layout ``{"exc_type", "exc_module", "exc_message"}`` and
rebuilt with their own type when that type's module is already imported in the reading process
(a stored result never makes us import a module by name), else as :class:`RemoteError`.
"""

from __future__ import annotations

import abc
import asyncio
import builtins
import logging
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from typing import Any, ClassVar

from celeriac import states
from celeriac.errors import BackendError, DecodeError, RemoteError, ResultTooLarge
from celeriac.protocol.serializers import SerializerRegistry
from celeriac.utils.outage import Outage

DEFAULT_EXPIRES = 86400.0


@dataclass(frozen=True, slots=True)
class ResultMeta:
    """Everything stored about one task: state, result or exception, and where it came from.

    For FAILURE, REVOKED, REJECTED and RETRY, ``result`` holds the *encoded* exception dict
    (see :func:`exception_to_dict`); :meth:`exception` rebuilds it.
    """

    task_id: str
    status: str = states.PENDING
    result: Any = None
    traceback: str | None = None
    date_done: float | None = None
    name: str | None = None
    args: Any = None
    kwargs: Any = None
    worker: str | None = None
    retries: int = 0
    queue: str | None = None
    parent_id: str | None = None
    root_id: str | None = None
    group_id: str | None = None
    children: list[Any] = field(default_factory=list)
    #: Where the worker sends this record (``rpc://``: the caller's reply queue). Travels with
    #: the record to the backend and is never stored: ``to_dict`` leaves it out when unset.
    reply_to: str | None = None

    @property
    def ready(self) -> bool:
        return self.status in states.READY_STATES

    def exception(self) -> BaseException | None:
        """The stored exception, rebuilt; ``None`` unless the state carries one."""
        if self.status not in states.EXCEPTION_STATES or not isinstance(self.result, Mapping):
            return None
        return exception_from_dict(self.result)

    def to_dict(self) -> dict[str, Any]:
        """The record as a dict for a serializer: dataclasses in it become dicts (as
        :func:`dataclasses.asdict` makes them), nothing else is copied. Why not ``asdict``
        itself: it deep-copies every value on the way, which was about a tenth of a prefork
        child's CPU per task with a stored result, and a full copy of a large one."""
        data = {name: _plain(getattr(self, name)) for name in _META_FIELDS}
        if data["reply_to"] is None:
            del data["reply_to"]  # records stored before rpc existed, and by stores, lack it
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResultMeta:
        if not isinstance(data, Mapping) or "task_id" not in data:
            raise DecodeError("stored result is not a result record")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


_META_FIELDS = tuple(f.name for f in fields(ResultMeta))
_ATOMS = (str, int, float, bool, bytes, type(None))


def _plain(value: Any) -> Any:
    """``value`` with the dataclasses inside lists, tuples and dicts turned into dicts, and
    those containers rebuilt only then; any other object is returned as it is."""
    if isinstance(value, _ATOMS):
        return value
    if isinstance(value, list | tuple | dict):
        items = value.items() if isinstance(value, dict) else value
        if not any(_needs_plain(item) for item in items):
            return value
        if isinstance(value, dict):
            return type(value)((_plain(k), _plain(v)) for k, v in value.items())
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
            return type(value)(*[_plain(v) for v in value])
        return type(value)(_plain(v) for v in value)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value


def _needs_plain(item: Any) -> bool:
    """Whether ``item`` (a value, or a dict's ``(key, value)``) holds a dataclass instance."""
    if isinstance(item, _ATOMS):
        return False
    if isinstance(item, list | tuple | dict):
        inner = item.items() if isinstance(item, dict) else item
        return any(_needs_plain(x) for x in inner)
    return is_dataclass(item) and not isinstance(item, type)


def too_large(meta: ResultMeta, size: int, limit: int) -> ResultMeta:
    """``meta`` as the FAILURE stored in place of a record of ``size`` bytes over ``limit``."""
    error = ResultTooLarge(
        f"the result of {meta.name or 'task'}[{meta.task_id}] encodes to {size:,} bytes, more "
        f"than result_max_bytes ({limit:,}): return less, or store it elsewhere and return a key"
    )
    return replace(
        meta, status=states.FAILURE, result=exception_to_dict(error), traceback=None, children=[]
    )


def exception_to_dict(exc: BaseException) -> dict[str, Any]:
    """Celery's exception layout: type name, module, and the args (as repr when unserializable)."""
    cls = type(exc)
    if isinstance(exc, RemoteError):
        return {
            "exc_type": exc.exc_type,
            "exc_module": exc.exc_module,
            "exc_message": [exc.exc_message],
        }
    message: list[Any] = []
    for arg in exc.args:
        message.append(arg if isinstance(arg, str | int | float | bool | type(None)) else repr(arg))
    return {"exc_type": cls.__qualname__, "exc_module": cls.__module__, "exc_message": message}


def exception_from_dict(data: Mapping[str, Any]) -> BaseException:
    """Rebuild an exception; its own type if its module is loaded here, else RemoteError."""
    type_name = str(data.get("exc_type", "Exception"))
    module_name = str(data.get("exc_module", "builtins"))
    raw = data.get("exc_message", [])
    args = list(raw) if isinstance(raw, list | tuple) else [raw]
    module = builtins if module_name == "builtins" else sys.modules.get(module_name)
    cls: Any = module
    for part in type_name.split("."):
        cls = getattr(cls, part, None) if cls is not None else None
    if isinstance(cls, type) and issubclass(cls, BaseException):
        try:
            return cls(*args)
        except Exception:
            pass  # a constructor with another signature: fall through to RemoteError
    text = " ".join(str(a) for a in args)
    return RemoteError(type_name, module_name, text)


class Backend(abc.ABC):
    """The result backend contract; see the module docstring for what a subclass implements."""

    schemes: ClassVar[tuple[str, ...]] = ()
    #: Seconds between polls in the default ``_wait``, growing to ``poll_max``.
    poll_min: ClassVar[float] = 0.001
    poll_max: ClassVar[float] = 0.05
    #: The longest one thread blocks on behalf of ``await_for`` before it checks back.
    await_slice: ClassVar[float] = 1.0
    #: Whether results travel back to the process that sent the task (``rpc://``) rather than
    #: to a store: then every send carries ``reply_to`` (see :attr:`reply_to`).
    replies: ClassVar[bool] = False

    def __init__(
        self,
        url: str,
        *,
        serializer: str = "json",
        accept: Collection[str] = ("json",),
        expires: float | None = DEFAULT_EXPIRES,
        serializers: SerializerRegistry | None = None,
        max_bytes: int | None = None,
        **options: Any,
    ) -> None:
        self.url = url
        #: The largest encoded record stored (``result_max_bytes``), see :meth:`_encode_bounded`.
        self.max_bytes = max_bytes
        self.serializer = serializer
        self.accept = tuple(accept)
        self.expires = expires
        self.serializers = serializers or SerializerRegistry.with_defaults()
        self.options = options
        #: One log line per outage of this backend (see :class:`~celeriac.utils.outage.Outage`).
        self.outage = Outage("result backend", logging.getLogger("celeriac.results"))

    @property
    def reply_to(self) -> str | None:
        """Where workers send this process's results: a replying backend's queue (it may
        connect on first use), ``None`` for a store. The app reads it only when
        :attr:`replies` is set, so a store's sends never pay for it."""
        return None

    def reply_to_for(self, parent_id: str | None) -> str | None:
        """Where the results of a send with this parent go, when neither the send nor a running
        task names a ``reply_to`` (asked only when :attr:`replies` is set): a replying backend
        answers with the queue its parent's results went to, so that a chain's next step,
        sent by the worker after the step ran, reports to the caller too."""
        return self.reply_to

    def check_send(self, embed: Mapping[str, Any]) -> None:
        """Refuse, before anything is published, a send this backend cannot serve (``rpc://``
        refuses chords). Asked only by replying backends' sends, with the message's embed."""

    # -- what a backend implements ----------------------------------------------------------
    @abc.abstractmethod
    def _write(self, task_id: str, data: bytes, expires_at: float | None) -> None: ...

    @abc.abstractmethod
    def _read(self, task_id: str) -> bytes | None: ...

    @abc.abstractmethod
    def _delete(self, task_id: str) -> None: ...

    @abc.abstractmethod
    def _incr(self, key: str, amount: int, expires_at: float | None) -> int: ...

    def _write_many(self, items: list[tuple[str, bytes, float | None]]) -> None:
        """Write several records; backends that can do it in one round trip override this."""
        for task_id, data, expires_at in items:
            self._write(task_id, data, expires_at)

    def cleanup(self) -> int:
        """Remove expired records; returns how many. Backends that expire natively return 0."""
        return 0

    def close(self) -> None:
        """Release connections."""

    def _wait(self, task_id: str, timeout: float | None) -> bytes | None:
        """Poll until the record is ready; backends with notifications override this."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = self.poll_min
        while True:
            data = self._read(task_id)
            if data is not None and self._decode(data).ready:
                return data
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return data
                delay = min(delay, remaining)
            time.sleep(delay)
            delay = min(delay * 2, self.poll_max)

    # -- the public, encoded API ------------------------------------------------------------
    def _expires_at(self) -> float | None:
        return None if self.expires is None else time.time() + self.expires

    def _encode(self, meta: ResultMeta) -> bytes:
        content_type, _, data = self.serializers.dumps(meta.to_dict(), self.serializer)
        return content_type.encode("ascii") + b"\n" + data

    def _encode_bounded(self, meta: ResultMeta) -> bytes:
        """:meth:`_encode`, unless the record is larger than :attr:`max_bytes`: then the task's
        FAILURE with :class:`~celeriac.errors.ResultTooLarge` saying how large, so that a
        caller's ``get()`` raises a clear error instead of the store choking on the value."""
        data = self._encode(meta)
        if self.max_bytes is not None and len(data) > self.max_bytes:
            data = self._encode(too_large(meta, len(data), self.max_bytes))
        return data

    def _decode(self, data: bytes) -> ResultMeta:
        content_type, sep, payload = data.partition(b"\n")
        if not sep:
            raise DecodeError("stored result has no content-type line")
        value = self.serializers.loads(payload, content_type.decode("ascii"), "utf-8", self.accept)
        return ResultMeta.from_dict(value)

    def store(self, meta: ResultMeta) -> None:
        """Store the state of ``meta.task_id``; ready states get ``date_done`` if unset."""
        if meta.ready and meta.date_done is None:
            meta = replace(meta, date_done=time.time())
        try:
            self._write(meta.task_id, self._encode_bounded(meta), self._expires_at())
        except (DecodeError, BackendError):
            raise
        except Exception as exc:
            raise BackendError(f"could not store result of {meta.task_id}: {exc}") from exc

    def store_many(self, metas: list[ResultMeta]) -> None:
        """Store several records at once (the worker's result writer batches with this)."""
        if not metas:
            return
        now = time.time()
        expires_at = self._expires_at()
        items = [
            (
                meta.task_id,
                self._encode_bounded(
                    replace(meta, date_done=now) if meta.ready and meta.date_done is None else meta
                ),
                expires_at,
            )
            for meta in metas
        ]
        try:
            self._write_many(items)
        except (DecodeError, BackendError):
            raise
        except Exception as exc:
            raise BackendError(f"could not store {len(items)} results: {exc}") from exc

    def get_meta(self, task_id: str) -> ResultMeta:
        """The stored record, or a PENDING one when nothing is stored (Celery's meaning)."""
        data = self._read(task_id)
        return ResultMeta(task_id=task_id) if data is None else self._decode(data)

    def wait_for(self, task_id: str, timeout: float | None = None) -> ResultMeta:
        """Block until the task is ready or ``timeout`` passes; returns the latest record."""
        data = self._wait(task_id, timeout)
        return ResultMeta(task_id=task_id) if data is None else self._decode(data)

    def forget(self, task_id: str) -> None:
        self._delete(task_id)

    def incr(self, key: str, amount: int = 1) -> int:
        """Atomically add ``amount`` to counter ``key`` and return the new value."""
        return self._incr(key, amount, self._expires_at())

    # -- groups and chords ---------------------------------------------------------------------
    # A group's member ids are one record under a key of their own; a chord counts its finished
    # members with the backend's atomic counter. Every backend gets these from _write/_read/_incr.

    @staticmethod
    def _group_key(group_id: str) -> str:
        return f"taskset:{group_id}"

    def save_group(self, group_id: str, task_ids: Sequence[str]) -> None:
        """Save a group's member ids, in order, so ``GroupResult.restore(id)`` can rebuild it."""
        meta = ResultMeta(self._group_key(group_id), states.SUCCESS, list(task_ids))
        self.store(meta)

    def restore_group(self, group_id: str) -> list[str] | None:
        """The member ids saved for ``group_id``, or ``None`` when none were."""
        data = self._read(self._group_key(group_id))
        if data is None:
            return None
        ids = self._decode(data).result
        if not isinstance(ids, list):
            raise DecodeError(f"group record {group_id} does not hold a list of task ids")
        return [str(i) for i in ids]

    def delete_group(self, group_id: str) -> None:
        self._delete(self._group_key(group_id))

    def join_chord(
        self, group_id: str, member_id: str, *, index: int | None = None
    ) -> tuple[bool, int]:
        """Count ``member_id`` as finished in chord ``group_id``; returns whether it was counted
        now (False for a redelivered or re-run member already counted) and how many distinct
        members are counted. The member counted now that makes the count reach the chord's
        size sends the body; a redelivered one that finds the chord complete sends it only if
        that never happened (see :func:`celeriac.canvas.flow.join`).

        This default makes two increments; a process killed between them leaves the member
        marked but uncounted (its chord would wait forever), so every shipped backend overrides
        it with one atomic step (a lock, a transaction, a MULTI)."""
        expires_at = self._expires_at()
        added = self._incr(f"chord-member:{group_id}:{member_id}", 1, expires_at) == 1
        return added, self._incr(f"chord-count:{group_id}", int(added), expires_at)

    def chord_size(self, group_id: str) -> int | None:
        """The size chord ``group_id`` completes at, when the backend keeps it (Celery's layout
        does, for chords a Celery client sent: their body does not carry ``chord_size``)."""
        return None

    def chord_results(self, group_id: str) -> list[ResultMeta] | None:
        """The header's results as the backend recorded them at each join, in header order,
        when it keeps them (Celery's layout); ``None`` otherwise."""
        return None

    def finish_chord(self, group_id: str) -> bool:
        """Called once the body is sent: drop what the backend kept for the join (Celery's
        layout cleans its chord keys as Celery's worker does). True if anything was dropped."""
        return False

    def get_many(self, task_ids: Sequence[str]) -> list[ResultMeta]:
        """The records of several tasks, in order (backends with a multi-get override this)."""
        return [self.get_meta(task_id) for task_id in task_ids]

    # -- async twins --------------------------------------------------------------------------
    async def astore(self, meta: ResultMeta) -> None:
        await asyncio.to_thread(self.store, meta)

    async def aget_meta(self, task_id: str) -> ResultMeta:
        return await asyncio.to_thread(self.get_meta, task_id)

    async def await_for(self, task_id: str, timeout: float | None = None) -> ResultMeta:
        # A thread cannot be cancelled: wait in slices, so that a cancelled await frees its
        # thread within ``await_slice`` (asyncio.run joins those threads when it shuts down).
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = self.await_slice
            if deadline is not None:
                step = max(0.0, min(step, deadline - time.monotonic()))
            meta = await asyncio.to_thread(self.wait_for, task_id, step)
            if meta.ready or (deadline is not None and time.monotonic() >= deadline):
                return meta

    def __repr__(self) -> str:
        from celeriac.utils.urls import redact_url

        return f"<{type(self).__name__} {redact_url(self.url)}>"
