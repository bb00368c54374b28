"""The board: one page of shared memory per prefork child, where a child that fetches its own
messages writes what it runs, for the worker to read when it needs to, without being woken.

Why: a child that told the worker of each task over its pipe would cost both processes a write,
a read and a wake-up per task, which is most of what fetching for itself saves (see
:mod:`celeriac.transports.redis.fetcher`). The worker needs to know what a child runs only now
and then: on its timer (hard time limits, lease renewal), for a control command (``inspect
active``, a revoke that terminates), when a child dies (its task's outcome, its message's
fate) and at shutdown. So a child writes an :class:`Entry` into its slot as each task starts
and ends (a :mod:`marshal` dump and a copy: a few microseconds) and the worker reads the slots
then. :mod:`marshal`, not :mod:`pickle`: 0.95 against 4.5 us to encode an entry with a 900-byte
message, a task's start written in 3.8 against 6.6 us; an entry whose broker tag is not made of
plain values (a transport of a third party) is pickled.

A slot holds the running task's message as delivered (``Running.payload``): if the child dies,
the worker settles the message and records the task's end from it, as it does for a task it
handed over itself. A message too large for a slot is not run from the board (the child hands it
to the worker, which runs it the usual way).

Consistency without locks: a sequence counter per slot (a seqlock). The writer makes it odd,
writes the entry, makes it even again; a reader copies the entry between two reads of the
counter and tries again while they differ or are odd (a torn copy also fails to decode, and
is tried again too). There is one writer per slot, and readers never write.

A slot also lists what its child holds (:mod:`.holding`: the rest of a claim, waiting behind
the task it runs), in a region of its own at the slot's end: each held message's queue and
broker tag, written once per claim, and how many of them the child has taken since, a number
it raises before it runs each (so a message is either listed or on its way to ``running``, never
both). When a child dies, the worker gives back what it still held (:meth:`Board.held`) at
once, instead of leaving it leased until its lease ends.

The memory is an unlinked file (``memfd_create`` where there is one), so nothing is left behind
whatever happens to the worker; each child gets its descriptor through the pipe that starts it
(:class:`Shared`, pickled as :mod:`multiprocessing` pickles a ``Connection``), for the fork
server and for ``spawn`` alike.
"""

from __future__ import annotations

import contextlib
import marshal
import mmap
import os
import pickle
import struct
import tempfile
import time
from multiprocessing import reduction
from typing import Any, NamedTuple

__all__ = ["SLOT_SIZE", "Board", "Entry", "Running", "Shared", "SlotWriter"]

#: Bytes per child: the header and the encoded entry, its message included.
SLOT_SIZE = 256 * 1024
#: The sequence counter, alone: written before the rest (odd) and after it (even).
_SEQUENCE = struct.Struct("=Q")
#: pid, finished, succeeded, failed, client id (-1: none), running (0/1), length of the encoded
#: ``(Running, totals)`` that follows
_FIELDS = struct.Struct("=qqqqqBI")
_HEADER = struct.Struct("=QqqqqqBI")  # both, as a reader reads them
_READ_ATTEMPTS = 1000
#: Bytes at each slot's end for what its child holds (a quarter of a smaller slot): its own
#: sequence counter, then how many of the listed messages were taken, and the length of the
#: list that follows. 15 held Redis tags of queue ``celery`` marshal to 293 bytes.
HELD_ROOM = 32 * 1024
_HELD_FIELDS = struct.Struct("=II")
_HELD_HEADER = struct.Struct("=QII")


class Running(NamedTuple):
    """The task a child runs now, with what the worker needs to settle its message."""

    task_id: str
    task_name: str
    queue: str
    tag: Any
    delivery_count: int
    #: The message as delivered (its bytes as the broker stored them).
    payload: bytes
    #: When it started (``time.time()``).
    started: float
    hard_limit: float | None
    acks_late: bool


class Entry(NamedTuple):
    """What one child last wrote: who it is, what it has done, what it runs."""

    pid: int
    #: Tasks it finished from the board, and of them succeeded and failed.
    finished: int = 0
    succeeded: int = 0
    failed: int = 0
    running: Running | None = None
    #: The broker connection's id, by which the worker ends the child's wait for messages.
    client_id: int | None = None
    #: Tasks it started from the board, by name (``stats``' totals).
    totals: dict[str, int] = {}  # never changed: each entry has its own


class Shared:
    """A file descriptor that crosses to a child in its start arguments: pickled as
    :mod:`multiprocessing` pickles a ``Connection`` (the fork server and ``spawn`` pass the
    descriptor itself), unpickled as the child's own descriptor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _detach, (reduction.DupFd(self.fd),)


def _detach(dup: Any) -> int:
    return int(dup.detach())


def _memory(size: int) -> int:
    """A new descriptor for ``size`` bytes of memory that no path names."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("celeriac-board", os.MFD_CLOEXEC)
    else:  # macOS: a temporary file, unlinked at once
        fd, path = tempfile.mkstemp(prefix="celeriac-board-")
        os.unlink(path)
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Board:
    """The worker's side: ``count`` slots it reads (see the module docstring)."""

    def __init__(self, count: int, slot_size: int = SLOT_SIZE) -> None:
        self.count = count
        self.slot_size = slot_size
        self._fd = _memory(count * slot_size)
        self._map = mmap.mmap(self._fd, count * slot_size)

    def shared(self) -> Shared:
        """What a child is started with to write its slot (:meth:`SlotWriter.open`)."""
        return Shared(self._fd)

    def clear(self, index: int) -> None:
        """Empty slot ``index`` (before a new child takes it over)."""
        base = index * self.slot_size
        self._map[base : base + _HEADER.size] = bytes(_HEADER.size)
        held = base + self.slot_size - _held_room(self.slot_size)
        self._map[held : held + _HELD_HEADER.size] = bytes(_HELD_HEADER.size)

    def held(self, index: int) -> list[tuple[str, Any]]:
        """What the child of slot ``index`` holds and has not taken: ``(queue, tag)`` of each,
        in order (read once the child is gone, or a consistent copy of a live one's)."""
        room = _held_room(self.slot_size)
        base = index * self.slot_size + self.slot_size - room
        view = self._map
        for _ in range(_READ_ATTEMPTS):
            sequence, taken, length = _HELD_HEADER.unpack_from(view, base)
            if sequence == 0 or length == 0:
                return []
            if sequence & 1 or length > room - _HELD_HEADER.size:
                time.sleep(0)
                continue
            start = base + _HELD_HEADER.size
            data = view[start : start + length]
            if _SEQUENCE.unpack_from(view, base)[0] != sequence:
                continue
            try:
                listed = _loads(data)
            except Exception:  # a torn copy the counter did not catch: read again
                listed = None
            if listed is not None:
                return [(str(queue), tag) for queue, tag in listed[taken:]]
        return []

    def read(self, index: int) -> Entry | None:
        """Slot ``index``'s entry as last written whole, or ``None`` if none was written."""
        base = index * self.slot_size
        view = self._map
        for _ in range(_READ_ATTEMPTS):
            head = _HEADER.unpack_from(view, base)
            sequence, pid, finished, succeeded, failed, client_id, running, length = head
            if sequence == 0:
                return None
            if sequence & 1 or length > self.slot_size - _HEADER.size:
                time.sleep(0)  # mid-write: let the writer finish
                continue
            start = base + _HEADER.size
            data = view[start : start + length] if length else b""
            if _HEADER.unpack_from(view, base)[0] != sequence:
                continue
            task, totals = _decoded(data) if length else (None, {})
            if length and totals is None:  # a torn copy the counter did not catch
                continue
            return Entry(
                pid,
                finished,
                succeeded,
                failed,
                task if running else None,
                client_id if client_id >= 0 else None,
                totals or {},
            )
        return None

    def peek(self, index: int) -> tuple[int, int, bool] | None:
        """``(pid, finished, running)`` of slot ``index`` from its header alone (nothing
        decoded: the worker's idle look), or ``None`` if none was written."""
        base = index * self.slot_size
        for _ in range(_READ_ATTEMPTS):
            sequence, pid, finished, _, _, _, running, _ = _HEADER.unpack_from(self._map, base)
            if sequence == 0:
                return None
            if sequence & 1 or _SEQUENCE.unpack_from(self._map, base)[0] != sequence:
                time.sleep(0)
                continue
            return pid, finished, bool(running)
        return None

    def close(self) -> None:
        with contextlib.suppress(BufferError):
            self._map.close()
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _encoded(task: Running, totals: dict[str, int]) -> bytes:
    """A slot's data: the task's fields and the totals (see :func:`_dumps`)."""
    return _dumps((tuple(task), totals))


def _decoded(data: bytes) -> tuple[Running | None, dict[str, int] | None]:
    try:
        fields, totals = _loads(data)
    except Exception:  # a torn copy: the caller reads again
        return None, None
    return Running(*fields), totals


def _dumps(value: Any) -> bytes:
    """``M`` and a :mod:`marshal` dump, or ``P`` and a pickle when a value is not a plain one
    (the tag of a third party's transport)."""
    try:
        return b"M" + marshal.dumps(value)
    except ValueError:
        return b"P" + pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def _loads(data: bytes) -> Any:
    if data[:1] == b"M":
        return marshal.loads(data[1:])  # noqa: S302 - our child wrote it
    return pickle.loads(data[1:])


class SlotWriter:
    """A child's side: it writes its own slot, and only it. A task's start writes the task
    (encoded, with the totals by name); its end only the counters and the running flag in the
    header (nothing encoded: a few stores)."""

    def __init__(self, fd: int, index: int, slot_size: int = SLOT_SIZE) -> None:
        self._map = mmap.mmap(fd, slot_size, offset=index * slot_size)
        os.close(fd)  # the mapping keeps the memory
        self._sequence = _HEADER.unpack_from(self._map, 0)[0] & ~1
        self._length = 0
        self.room = slot_size - _HEADER.size - _held_room(slot_size)
        self._held_room = _held_room(slot_size)
        self._held_at = slot_size - self._held_room
        self._held_sequence = _HELD_HEADER.unpack_from(self._map, self._held_at)[0] & ~1
        self._held_length = 0

    def started(
        self, pid: int, counts: tuple[int, int, int], client_id: int | None, task: Running,
        totals: dict[str, int],
    ) -> bool:  # fmt: skip
        """Publish ``task`` as running; False (nothing written) if it is too large."""
        data = _encoded(task, totals)
        if len(data) > self.room:
            return False
        self._write(pid, counts, client_id, 1, data)
        return True

    def idle(self, pid: int, counts: tuple[int, int, int], client_id: int | None) -> None:
        """Publish that nothing runs (the last task's totals stay)."""
        self._write(pid, counts, client_id, 0, None)

    def hold(self, held: list[tuple[str, Any]]) -> bool:
        """List ``(queue, tag)`` of each message now held, none taken yet; False (the list
        stays empty) if it does not fit."""
        data = _dumps(held)
        if len(data) > self._held_room - _HELD_HEADER.size:
            self._write_held(0, b"")
            return False
        self._write_held(0, data)
        return True

    def took(self, count: int) -> None:
        """``count`` of the listed messages are taken now (to run, or to give back)."""
        self._write_held(count, None)

    def _write_held(self, taken: int, data: bytes | None) -> None:
        """The held region's seqlock write (as :meth:`_write`)."""
        view, at = self._map, self._held_at
        self._held_sequence += 1
        _SEQUENCE.pack_into(view, at, self._held_sequence)
        if data is not None:
            start = at + _HELD_HEADER.size
            view[start : start + len(data)] = data
            self._held_length = len(data)
        _HELD_FIELDS.pack_into(view, at + _SEQUENCE.size, taken, self._held_length)
        self._held_sequence += 1
        _SEQUENCE.pack_into(view, at, self._held_sequence)

    def _write(
        self,
        pid: int,
        counts: tuple[int, int, int],
        client_id: int | None,
        running: int,
        data: bytes | None,
    ) -> None:
        """The seqlock's write: the counter made odd first, alone; then the fields and the
        data; the counter made even last, alone (a reader that saw it even before and after
        its copy copied one whole entry)."""
        view = self._map
        self._sequence += 1
        _SEQUENCE.pack_into(view, 0, self._sequence)
        if data is not None:
            view[_HEADER.size : _HEADER.size + len(data)] = data
            self._length = len(data)
        _FIELDS.pack_into(
            view, _SEQUENCE.size, pid, *counts, _client(client_id), running, self._length
        )
        self._sequence += 1
        _SEQUENCE.pack_into(view, 0, self._sequence)

    def close(self) -> None:
        with contextlib.suppress(BufferError):
            self._map.close()


def _held_room(slot_size: int) -> int:
    return min(HELD_ROOM, slot_size // 4)


def _client(client_id: int | None) -> int:
    return -1 if client_id is None else client_id
