"""The Redis result backend in Celery's layout: a Celery 5.7 fleet and a celeriac one read and
write each other's results, groups and chords on one Redis.

Chosen with ``result_backend_transport_options={"layout": "celery"}`` (or ``?layout=celery``
in the backend URL); the native layout (``"celeriac"``) stays the default. Keys, as Celery's
``celery.backends.redis`` names them (``global_keyprefix`` or its alias ``key_prefix`` in
front, with ``_`` added unless the prefix ends in one of ``:_-.``; no prefix by default)::

    celery-task-meta-<id>           the task record; SET PX result_expires + PUBLISH on this name
    celery-taskset-meta-<gid>       a saved group: {"result": [[gid, null], [member tuples]]}
    celery-taskset-meta-<gid>.s     a chord's size (Celery's client: set_chord_size)
    celery-taskset-meta-<gid>.t     members added at run time (Task.add_to_chord: INCR)
    celery-taskset-meta-<gid>.j     finished members, [1, id, state, result] by header index
    celery-taskset-meta-<gid>.d     "<id>:<index>" of each member recorded (Celery 5.7 dedup)
    celery-taskset-meta-<gid>.c     the body's dispatch claim, "done" once sent and cleaned
    celeriac-counter-<name>         celeriac's own counters (incr), which Celery never reads

Records are Celery's JSON (or the configured ``result_serializer``; both sides must agree, as
two Celery apps must): ``status``, ``result``, ``traceback``, ``children`` (result tuples),
``date_done`` (ISO 8601), ``group_id``/``parent_id`` when set, the extended fields when the
record carries them, ``task_id``. :mod:`celeriac.results.redis.celery_format` says how each
field is converted and how exceptions keep their type in both directions.

What stays as in the native layout: waits never poll (a waiter SUBSCRIBEs to the record's key,
which is the channel Celery publishes on, and each message carries the record); stores are one
round trip (batches one pipeline); connection handling, URLs, options and faults are the native
backend's. What this layout adds over Celery: a store refuses to overwrite a SUCCESS in the same
atomic step that writes (Celery reads, then writes), and a chord member's join and the body's
claim are one script (:mod:`celeriac.results.redis.celery_scripts`).

What the native layout gives that this one does not:

* a content-type line in each record, so a reader refuses a serializer outside ``accept``
  (``ContentDisallowed``); here a record in another serializer fails to decode (``DecodeError``),
  as in Celery, and the SUCCESS guard works for json and msgpack records only;
* a group saved with ``save_group`` also gets a chord size (``.s``), which Celery's workers need
  to complete a chord a celeriac client sent: this backend cannot tell a chord's header from a
  plain group, so a plain group leaves that one inert key until it expires;
* joining a chord reads the member's stored record (one GET, plus the group record once per chord
  and process for the member's index when the caller does not give it), where the native join is
  one MULTI; a chord whose header celeriac did not save (a Celery client's) is ordered by the
  index the caller passes, else its members sort after the indexed ones;
* keys a celeriac worker completes are cleaned when :meth:`CeleryLayoutBackend.finish_chord` is
  called after the body is sent, as Celery cleans them; otherwise they expire.

Where the two fleets' states differ: celeriac stores REJECTED (a ready state here, with
``TaskRejectedError``), which Celery counts as unready (it stores nothing for a rejected task),
so a Celery client's ``get()`` keeps waiting on it as it would on Celery's own. Every record and
chord key lives ``result_expires``; Celery 5.7's ``result_failure_expires`` and
``result_chord_expires``, and ``result_compression``, are not read.
"""

from __future__ import annotations

import math
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from celeriac.errors import ImproperlyConfigured
from celeriac.results.base import ResultMeta
from celeriac.results.redis import celery_scripts as scripts
from celeriac.results.redis.backend import RedisBackend, _as_bytes, _ttl_ms
from celeriac.results.redis.celery_format import (
    GROUP_PREFIX,
    TASK_PREFIX,
    celery_key_prefix,
    chord_entry,
    entry_meta,
    group_ids,
    group_record,
    meta_from_record,
    record_from_meta,
)

__all__ = ["CeleryLayoutBackend"]

#: How long Celery keeps the "done" mark of a chord whose body was sent (its cleanup: 300 s).
DONE_SECONDS = 300
#: Groups whose member order this process remembers, for chord members' indexes.
_INDEX_CACHE = 256
#: Serializers whose records show a stored SUCCESS in their first bytes (see celery_scripts).
_GUARDED = {"json": "json", "msgpack": "msgpack"}


def _flag(name: str, value: Any) -> bool:
    """A boolean option, from Python or from a URL query string."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(
        f"result_backend_transport_options: {name} must be a boolean, not {value!r}"
    )


class CeleryLayoutBackend(RedisBackend):
    """:class:`RedisBackend` with Celery's keys and records (see the module docstring)."""

    def _key_prefix(self, given: str | None) -> str:
        return celery_key_prefix(given)

    def _configure_layout(self, options: Mapping[str, Any]) -> None:
        """``result_chord_ordered`` (Celery's transport option, default true): chord entries in
        a sorted set by header index, else in a list in the order members finish."""
        self.chord_ordered = _flag(
            "result_chord_ordered", options.get("result_chord_ordered", True)
        )
        self._guard = _GUARDED.get(self.serializer, "")
        self._indexes: OrderedDict[str, dict[str, int]] = OrderedDict()

    # -- names --------------------------------------------------------------------------------
    def result_key(self, task_id: str) -> str:
        return f"{self.key_prefix}{TASK_PREFIX}{task_id}"

    def ready_channel(self, task_id: str) -> str:
        return self.result_key(task_id)  # Celery publishes on the record's own key

    def counter_key(self, key: str) -> str:
        return f"{self.key_prefix}celeriac-counter-{key}"

    def group_key(self, group_id: str, suffix: str = "") -> str:
        """A group's record, or with ``suffix`` (``.j``, ``.s``...) one of its chord's keys."""
        return f"{self.key_prefix}{GROUP_PREFIX}{group_id}{suffix}"

    # -- records --------------------------------------------------------------------------------
    def _dumps(self, value: Any) -> bytes:
        return self.serializers.dumps(value, self.serializer)[2]

    def _loads(self, data: bytes) -> Any:
        serializer = self.serializers.get(self.serializer)
        return self.serializers.loads(
            data, serializer.content_type, serializer.content_encoding, self.accept
        )

    def _encode(self, meta: ResultMeta) -> bytes:
        return self._dumps(record_from_meta(meta))

    def _decode(self, data: bytes) -> ResultMeta:
        return meta_from_record(self._loads(data))

    def _write_commands(
        self, task_id: str, data: bytes, expires_at: float | None
    ) -> list[tuple[Any, ...]]:
        """One script: unless a SUCCESS is stored, SET (PX) and PUBLISH on the key."""
        ttl = _ttl_ms(expires_at)
        key = self.result_key(task_id)
        return [("EVAL", scripts.STORE, 1, key, data, "" if ttl is None else ttl, self._guard)]

    # -- groups ---------------------------------------------------------------------------------
    def save_group(self, group_id: str, task_ids: Sequence[str]) -> None:
        """Celery's group record (SET and PUBLISH, as ``GroupResult.save``), and the chord
        size a Celery worker needs to complete a chord with this header (``set_chord_size``:
        ``.s``, and a stale claim of an earlier run of the same frozen chord dropped)."""
        data = self._dumps(group_record(group_id, task_ids))
        key, size_key = self.group_key(group_id), self.group_key(group_id, ".s")
        ttl = _ttl_ms(self._expires_at())

        def op() -> None:
            pipe = self._client.pipeline(transaction=True)
            if ttl is None:
                pipe.set(key, data)
                pipe.set(size_key, len(task_ids))
            elif ttl > 0:
                pipe.set(key, data, px=ttl)
                pipe.set(size_key, len(task_ids), px=ttl)
            else:
                pipe.delete(key, size_key)
            pipe.publish(key, data)
            pipe.delete(self.group_key(group_id, ".c"))
            pipe.execute()

        self._call(f"save group {group_id}", op)

    def restore_group(self, group_id: str) -> list[str] | None:
        raw = self._call(
            f"read group {group_id}", lambda: self._client.get(self.group_key(group_id))
        )
        data = _as_bytes(raw)
        return None if data is None else group_ids(self._loads(data))

    def delete_group(self, group_id: str) -> None:
        key = self.group_key(group_id)
        self._call(f"forget group {group_id}", lambda: self._client.delete(key))

    # -- chords ---------------------------------------------------------------------------------
    def join_chord(
        self, group_id: str, member_id: str, *, index: int | None = None
    ) -> tuple[bool, int]:
        """Record ``member_id`` (its stored record) in Celery's chord keys, atomically with the
        count and, when this completes the chord, the body's dispatch claim.

        ``index`` is the member's place in the header (its ``group_index``); without it, the
        place in the group record celeriac's client saved, else none (sorted last). Returns
        ``(added, count)`` as the contract says, with one refinement: a chord already sent and
        cleaned, or completed and claimed by a Celery worker, reports a count of 0, since its
        body is not this caller's to send.
        """
        if index is None:
            index = self._index_in_group(group_id, member_id)
        raw = _as_bytes(
            self._call(f"read {member_id}", lambda: self._client.get(self.result_key(member_id)))
        )
        meta = ResultMeta(task_id=member_id) if raw is None else self._decode(raw)
        entry = self._dumps(chord_entry(meta))
        score = "+inf" if index is None else str(index)
        keys = [self.group_key(group_id, s) for s in (".j", ".t", ".s", ".d", ".c")]
        keys.append(self.group_key(group_id))
        args: list[bytes | str | int] = [f"{member_id}:{score}", score, entry]
        args += ["1" if self.chord_ordered else "0", self._chord_seconds()]
        args.append(scripts.CLAIM_PREFIX + uuid.uuid4().hex)
        reply = self._call(
            f"join chord {group_id}",
            lambda: self._client.eval(scripts.JOIN, len(keys), *keys, *args),
        )
        added, count, _total, claim = (int(v) for v in reply)
        if claim in (-1, 3):
            return bool(added), 0
        return bool(added), count

    def _chord_seconds(self) -> int:
        """How long chord keys live (Celery: ``result_expires``, whole seconds; 0: for ever)."""
        return 0 if self.expires is None else max(1, math.ceil(self.expires))

    def _index_in_group(self, group_id: str, member_id: str) -> int | None:
        """The member's place in the saved group record, read once per group and process."""
        places = self._indexes.get(group_id)
        if places is None:
            ids = self.restore_group(group_id)
            if ids is None:
                return None
            places = {task_id: i for i, task_id in enumerate(ids)}
            self._indexes[group_id] = places
            while len(self._indexes) > _INDEX_CACHE:
                self._indexes.popitem(last=False)
        return places.get(member_id)

    def chord_size(self, group_id: str) -> int | None:
        """The size a chord completes at (``.s`` + ``.t``), ``None`` if no one set it: what a
        caller compares :meth:`join_chord`'s count with when the body does not carry it (a
        chord sent by Celery)."""
        size, extra = self._call(
            f"read chord {group_id}",
            lambda: self._client.mget(
                [self.group_key(group_id, ".s"), self.group_key(group_id, ".t")]
            ),
        )
        return None if size is None else int(size) + int(extra or 0)

    def chord_results(self, group_id: str) -> list[ResultMeta] | None:
        """The finished members recorded in ``.j`` (by header index when ordered), ``None`` if
        none: the body's arguments when no group record lists the header (a Celery client
        saves one only for nested headers)."""
        key = self.group_key(group_id, ".j")

        def op() -> list[Any]:
            if self.chord_ordered:
                return list(self._client.zrange(key, 0, -1))
            return list(self._client.lrange(key, 0, -1))

        entries = self._call(f"read chord {group_id}", op)
        if not entries:
            return None
        return [entry_meta(self._loads(bytes(raw))) for raw in entries]

    def finish_chord(self, group_id: str) -> bool:
        """After the body is sent: delete the chord's keys and mark it done, as Celery's worker
        does, if the claim is celeriac's (a Celery worker cleans its own). True if cleaned."""
        keys = [self.group_key(group_id, s) for s in (".c", ".j", ".t", ".s", ".d")]
        done = self._call(
            f"finish chord {group_id}",
            lambda: self._client.eval(scripts.FINISH, len(keys), *keys, DONE_SECONDS),
        )
        return bool(done)
