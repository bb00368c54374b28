"""Celery's Redis result records, as values: key names, the task record, group and chord entries.

Pure conversions between celeriac's :class:`~celeriac.results.base.ResultMeta` and the dicts
Celery 5.7's ``celery.backends.base`` writes and reads, so that the Redis backend's Celery layout
(:mod:`celeriac.results.redis.celery_backend`) only moves bytes. Nothing here talks to Redis.

What differs between the two models, and how it is bridged:

* ``date_done``: celeriac keeps epoch seconds, Celery an ISO 8601 string with its UTC offset
  (``"2026-12-02T19:36:31.447589+00:00"``, what ``app.now().isoformat()`` gives). Written in UTC;
  read from any offset (a naive one is taken as UTC, as Celery's ``enable_utc`` default means).
* ``children``: celeriac keeps task ids, Celery result tuples (``[[id, parent], None]`` for a
  task, ``[[gid, parent], [members...]]`` for a group). A group child is read as its members'
  ids, since celeriac's children are tasks.
* the extended fields (``name``, ``args``, ``kwargs``, ``worker``, ``retries``, ``queue``):
  Celery writes all of them, or none, by ``result_extended``. The backend does not see that
  setting, only the record: a record with any of ``name``, ``args``, ``kwargs``, ``worker`` or
  ``queue`` set (the executor fills them only under ``result_extended``) is written with all six,
  as Celery does; otherwise none, and ``retries`` reads back as 0.
* ``group_id``, ``parent_id`` (and celeriac's ``root_id``) are written only when set, as Celery
  does for the first two; Celery ignores ``root_id``.
* exceptions: both use ``{"exc_type", "exc_message", "exc_module"}``. celeriac's task errors
  (``celeriac.errors.TaskRevokedError``, ``TimeLimitExceeded``...) are written under the module
  where Celery keeps its own (``celery.exceptions``, ``billiard.exceptions``), so that a Celery
  client rebuilds *its* class and ``except TaskRevokedError`` works there; read back, those names
  become celeriac's classes again. Any other exception keeps its own module and name.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from celeriac import states
from celeriac.errors import DecodeError
from celeriac.results.base import ResultMeta

__all__ = [
    "CELERY_LAYOUT",
    "NATIVE_LAYOUT",
    "celery_key_prefix",
    "chord_entry",
    "entry_meta",
    "from_celery_exception",
    "group_ids",
    "group_record",
    "meta_from_record",
    "record_from_meta",
    "to_celery_exception",
]

NATIVE_LAYOUT = "celeriac"
CELERY_LAYOUT = "celery"

TASK_PREFIX = "celery-task-meta-"
GROUP_PREFIX = "celery-taskset-meta-"

_CELERIAC_ERRORS = "celeriac.errors"
_CELERY_EXCEPTIONS = "celery.exceptions"
_BILLIARD_EXCEPTIONS = "billiard.exceptions"

#: celeriac's error name -> (Celery's module, Celery's name). Celery keeps its time limits and
#: lost workers in billiard; a terminated task is stored by Celery as TaskRevokedError.
_TO_CELERY: dict[str, tuple[str, str]] = {
    "CeleriacError": (_CELERY_EXCEPTIONS, "CeleryError"),
    "ImproperlyConfigured": (_CELERY_EXCEPTIONS, "ImproperlyConfigured"),
    "NotRegistered": (_CELERY_EXCEPTIONS, "NotRegistered"),
    "QueueNotFound": (_CELERY_EXCEPTIONS, "QueueNotFound"),
    "BackendError": (_CELERY_EXCEPTIONS, "BackendError"),
    "TimeoutError": (_CELERY_EXCEPTIONS, "TimeoutError"),
    "TaskError": (_CELERY_EXCEPTIONS, "TaskError"),
    "MaxRetriesExceededError": (_CELERY_EXCEPTIONS, "MaxRetriesExceededError"),
    "TaskRevokedError": (_CELERY_EXCEPTIONS, "TaskRevokedError"),
    "Terminated": (_CELERY_EXCEPTIONS, "TaskRevokedError"),
    "ChordError": (_CELERY_EXCEPTIONS, "ChordError"),
    "Retry": (_CELERY_EXCEPTIONS, "Retry"),
    "Reject": (_CELERY_EXCEPTIONS, "Reject"),
    "Ignore": (_CELERY_EXCEPTIONS, "Ignore"),
    "TimeLimitExceeded": (_BILLIARD_EXCEPTIONS, "TimeLimitExceeded"),
    "SoftTimeLimitExceeded": (_BILLIARD_EXCEPTIONS, "SoftTimeLimitExceeded"),
    "WorkerLostError": (_BILLIARD_EXCEPTIONS, "WorkerLostError"),
}
#: (Celery's module, Celery's name) -> celeriac's error name.
_FROM_CELERY: dict[tuple[str, str], str] = {
    celery: name for name, celery in _TO_CELERY.items() if name != "Terminated"
}
_FROM_CELERY[(_BILLIARD_EXCEPTIONS, "Terminated")] = "Terminated"

_EXTENDED = ("name", "args", "kwargs", "worker", "queue")


def celery_key_prefix(prefix: str | None) -> str:
    """Celery's ``global_keyprefix`` rule: ``"x"`` becomes ``"x_"``, while a prefix that already
    ends in one of ``:_-.`` is kept as it is; none means none."""
    if not prefix:
        return ""
    return prefix if prefix[-1] in ":_-." else prefix + "_"


# -- exceptions ---------------------------------------------------------------------------------


def to_celery_exception(value: Any) -> Any:
    """An encoded exception dict with celeriac's task errors renamed as Celery's (any other
    value, or another module's exception, is returned as it is)."""
    if not isinstance(value, Mapping) or value.get("exc_module") != _CELERIAC_ERRORS:
        return value
    found = _TO_CELERY.get(str(value.get("exc_type")))
    if found is None:
        return value
    module, name = found
    return {**value, "exc_type": name, "exc_module": module}


def from_celery_exception(value: Any) -> Any:
    """The inverse of :func:`to_celery_exception`: Celery's task errors named as celeriac's."""
    if not isinstance(value, Mapping):
        return value
    name = _FROM_CELERY.get((str(value.get("exc_module")), str(value.get("exc_type"))))
    if name is None:
        return value
    return {**value, "exc_type": name, "exc_module": _CELERIAC_ERRORS}


def _result_out(status: str, result: Any) -> Any:
    return to_celery_exception(result) if status in states.EXCEPTION_STATES else result


def _result_in(status: str, result: Any) -> Any:
    return from_celery_exception(result) if status in states.EXCEPTION_STATES else result


# -- dates and children -------------------------------------------------------------------------


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat()


def _epoch(value: Any) -> float | None:
    """Celery's ``date_done`` as epoch seconds; ``None`` when absent or unreadable (a bad date
    must not make the whole record unreadable)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def _task_tuple(task_id: str) -> list[Any]:
    return [[task_id, None], None]


def _ids_of(node: Any) -> Iterable[str]:
    """The task ids in one of Celery's result tuples (a group's: its members', depth first);
    a bare id (an older or hand-written record) is taken as it is."""
    if isinstance(node, str):
        yield node
        return
    if not isinstance(node, Sequence) or len(node) != 2:
        return
    head, members = node
    if isinstance(members, Sequence) and not isinstance(members, str):
        for member in members:
            yield from _ids_of(member)
    elif isinstance(head, Sequence) and not isinstance(head, str) and head:
        yield str(head[0])


# -- the task record ------------------------------------------------------------------------------


def record_from_meta(meta: ResultMeta) -> dict[str, Any]:
    """The dict Celery's ``_store_result`` writes for ``meta`` (``status`` first: the store
    script refuses to overwrite a SUCCESS by reading the record's first bytes)."""
    record: dict[str, Any] = {
        "status": meta.status,
        "result": _result_out(meta.status, meta.result),
        "traceback": meta.traceback,
        "children": [_task_tuple(str(child)) for child in meta.children or ()],
        "date_done": _iso(meta.date_done) if meta.ready else None,
    }
    if meta.group_id:
        record["group_id"] = meta.group_id
    if meta.parent_id:
        record["parent_id"] = meta.parent_id
    if meta.root_id:
        record["root_id"] = meta.root_id
    if any(getattr(meta, name) is not None for name in _EXTENDED):
        record.update(
            name=meta.name,
            args=meta.args,
            kwargs=meta.kwargs,
            worker=meta.worker,
            retries=meta.retries,
            queue=meta.queue,
        )
    record["task_id"] = meta.task_id
    return record


def meta_from_record(record: Any, task_id: str | None = None) -> ResultMeta:
    """A record Celery (or this layout) wrote, as a ResultMeta; ``task_id`` when the record
    lacks its own (Celery's rpc-era records did)."""
    if not isinstance(record, Mapping) or "status" not in record:
        raise DecodeError("stored result is not a Celery result record")
    status = str(record["status"])
    ident = record.get("task_id") or task_id
    if not ident:
        raise DecodeError("stored Celery result record has no task_id")
    children = record.get("children") or ()
    retries = record.get("retries")
    return ResultMeta(
        task_id=str(ident),
        status=status,
        result=_result_in(status, record.get("result")),
        traceback=record.get("traceback"),
        date_done=_epoch(record.get("date_done")),
        name=record.get("name"),
        args=record.get("args"),
        kwargs=record.get("kwargs"),
        worker=record.get("worker"),
        retries=int(retries) if isinstance(retries, int) else 0,
        queue=record.get("queue"),
        parent_id=record.get("parent_id"),
        root_id=record.get("root_id"),
        group_id=record.get("group_id"),
        children=[i for child in children for i in _ids_of(child)],
    )


# -- groups and chords ----------------------------------------------------------------------------


def group_record(group_id: str, task_ids: Sequence[str]) -> dict[str, Any]:
    """What Celery's ``GroupResult.save()`` writes: the group's result tuple."""
    return {"result": [[group_id, None], [_task_tuple(str(t)) for t in task_ids]]}


def group_ids(record: Any) -> list[str]:
    """The member ids of a saved group, in order (a nested group's members in its place)."""
    if not isinstance(record, Mapping) or "result" not in record:
        raise DecodeError("stored group is not a Celery group record")
    value = record["result"]
    if not isinstance(value, Sequence) or len(value) != 2:
        raise DecodeError("stored Celery group record does not hold a group result tuple")
    members = value[1] if isinstance(value[1], Sequence) else ()
    return [i for member in members for i in _ids_of(member)]


def chord_entry(meta: ResultMeta) -> list[Any]:
    """One header member's entry in the chord's ``.j`` list: ``[1, id, state, result]``."""
    return [1, meta.task_id, meta.status, _result_out(meta.status, meta.result)]


def entry_meta(entry: Any) -> ResultMeta:
    """A ``.j`` entry as a ResultMeta (state and result only: that is all an entry keeps)."""
    if not isinstance(entry, Sequence) or isinstance(entry, str) or len(entry) != 4:
        raise DecodeError("chord entry is not Celery's [1, id, state, result]")
    _, task_id, status, result = entry
    return ResultMeta(str(task_id), str(status), _result_in(str(status), result))
