"""The prefork board (``worker/pools/board.py``): a child's slot written in another process is
read whole by the worker, under a writer that never stops; too large a task is refused."""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.connection import Connection
from typing import Any

import pytest

from celeriac.worker.pools.board import Board, Running, Shared, SlotWriter


def running(n: int, size: int = 10) -> Running:
    return Running(f"id-{n}", "tests.add", "celery", (b"%d" % n, n), 1, b"x" * size, 1.5, 2.0, True)


def write_entries(shared: Shared, index: int, count: int, ready: Connection) -> None:
    """A child: starts and ends ``count`` tasks in its slot as fast as it can."""
    writer = SlotWriter(shared, index)  # type: ignore[arg-type]  # unpickled as its fd
    pid = os.getpid()
    ready.send(True)
    for n in range(count):
        assert writer.started(pid, (n, n, 0), 7, running(n, size=n % 3000), {"tests.add": n + 1})
        writer.idle(pid, (n + 1, n + 1, 0), 7)
    writer.close()


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_a_slot_written_in_a_child_is_read_whole_while_it_writes(method: str) -> None:
    board = Board(3)
    ctx: Any = multiprocessing.get_context(method)
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=write_entries, args=(board.shared(), 1, 3000, theirs))
    child.start()
    try:
        assert ours.recv() is True
        seen = 0
        while child.is_alive() or seen == 0:
            entry = board.read(1)
            if entry is None:
                continue
            seen += 1
            assert entry.client_id == 7
            if entry.running is not None:  # every read is one whole entry, never a mix
                n = entry.finished
                assert entry.running == running(n, size=n % 3000)
                assert entry.totals == {"tests.add": n + 1}
            else:
                assert entry.totals == ({"tests.add": entry.finished} if entry.finished else {})
        child.join(30)
        assert child.exitcode == 0
        last = board.read(1)
        assert last is not None
        assert (last.pid, last.finished, last.running) == (child.pid, 3000, None)
        assert last.totals == {"tests.add": 3000}
        assert board.read(0) is None  # the slots beside it untouched
        assert board.read(2) is None
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        board.close()


def test_a_task_too_large_for_a_slot_is_refused_and_a_cleared_slot_reads_empty() -> None:
    board = Board(1, slot_size=4096)
    writer = SlotWriter(os.dup(board.shared().fd), 0, slot_size=4096)
    assert not writer.started(1, (0, 0, 0), None, running(1, size=5000), {})
    assert board.read(0) is None  # nothing written
    assert writer.started(1, (0, 0, 0), None, running(1, size=100), {"tests.add": 1})
    read = board.read(0)
    assert read is not None
    assert (read.running, read.client_id) == (running(1, size=100), None)
    board.clear(0)
    assert board.read(0) is None
    writer.close()
    board.close()


class _Tag:
    """A broker tag of a third party's transport: no plain value (marshal refuses it)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Tag) and other.value == self.value

    def __hash__(self) -> int:
        return self.value


def test_an_entry_of_plain_values_and_one_with_another_tag_both_read_back() -> None:
    """Plain values are marshalled (the common case, Redis' tags); any other tag is pickled."""
    board = Board(1)
    writer = SlotWriter(os.dup(board.shared().fd), 0)
    plain = running(3)
    other = plain._replace(tag=_Tag(3))
    for task in (plain, other, plain):
        assert writer.started(5, (1, 1, 0), 9, task, {"tests.add": 2})
        read = board.read(0)
        assert read is not None
        assert (read.running, read.totals, read.client_id) == (task, {"tests.add": 2}, 9)
        writer.idle(5, (2, 2, 0), 9)
        idle = board.read(0)
        assert idle is not None and idle.running is None and idle.finished == 2
    writer.close()
    board.close()


def test_what_a_child_holds_is_listed_until_taken_and_a_cleared_slot_lists_nothing() -> None:
    board = Board(2)
    writer = SlotWriter(os.dup(board.shared().fd), 1)
    assert board.held(1) == []
    held = [("q", ("1-0", 7)), ("q", ("2-0", 7)), ("other", ("3-0", 2))]
    assert writer.hold(held)
    assert board.held(1) == held
    assert board.held(0) == []  # another child's slot
    writer.took(1)
    assert board.held(1) == held[1:]
    writer.took(3)
    assert board.held(1) == []
    assert writer.hold([("q", _Tag(4))])  # a tag marshal refuses is pickled
    assert board.held(1) == [("q", _Tag(4))]
    # the list has a region of its own: a task's start does not touch it
    assert writer.started(5, (0, 0, 0), None, running(1), {})
    assert board.held(1) == [("q", _Tag(4))]
    board.clear(1)
    assert board.held(1) == [] and board.read(1) is None
    writer.close()
    board.close()


def test_a_list_too_long_for_its_region_is_refused_and_lists_nothing() -> None:
    board = Board(1)
    writer = SlotWriter(os.dup(board.shared().fd), 0)
    assert writer.hold([("q", ("1-0", 1))])
    assert not writer.hold([(f"q{n}" * 500, (f"{n}-0" * 500, n)) for n in range(40)])
    assert board.held(0) == []  # not the list before it either
    writer.close()
    board.close()
