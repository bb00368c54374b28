"""The write-behind result writer: a lone record is stored by its own thread at once, records
submitted while a write is under way are batched by the writer thread, in submission order, and
an event loop's thread never blocks on a write."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator

import pytest

from celeriac import states
from celeriac.results.base import ResultMeta
from celeriac.results.memory import MemoryBackend
from celeriac.results.writer import ResultWriter


class GatedBackend(MemoryBackend):
    """The in-memory backend, whose writes wait for ``gate`` and record who made them."""

    def __init__(self) -> None:
        super().__init__(f"memory://writer-{uuid.uuid4().hex}")
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.writes: list[tuple[str, list[str]]] = []

    def _write_many(self, items: list[tuple[str, bytes, float | None]]) -> None:
        self.entered.set()
        assert self.gate.wait(10), "the test never opened the gate"
        self.writes.append((threading.current_thread().name, [item[0] for item in items]))
        super()._write_many(items)


def success(task_id: str) -> ResultMeta:
    return ResultMeta(task_id=task_id, status=states.SUCCESS, result=task_id)


@pytest.fixture
def backend() -> Iterator[GatedBackend]:
    backend = GatedBackend()
    yield backend
    backend.gate.set()


def test_a_lone_record_is_stored_by_the_submitting_thread(backend: GatedBackend) -> None:
    writer = ResultWriter(backend)
    future = writer.submit(success("alone"))
    assert future.done() and future.exception() is None
    assert backend.writes == [(threading.current_thread().name, ["alone"])]
    assert backend.get_meta("alone").result == "alone"
    writer.close()


def test_records_submitted_during_a_write_are_batched_in_order(backend: GatedBackend) -> None:
    writer = ResultWriter(backend)
    backend.gate.clear()
    first = threading.Thread(target=writer.submit, args=(success("first"),), name="first")
    first.start()
    assert backend.entered.wait(10)  # "first" is being written, inline, and held there
    later = [writer.submit(success(f"later-{i}")) for i in range(5)]
    assert not any(f.done() for f in later)
    backend.gate.set()
    first.join(10)
    assert writer.flush(10)
    assert backend.writes == [
        ("first", ["first"]),
        ("celeriac-result-writer", [f"later-{i}" for i in range(5)]),
    ]
    writer.close()


def test_an_event_loop_thread_hands_its_records_to_the_writer_thread(
    backend: GatedBackend,
) -> None:
    writer = ResultWriter(backend)

    async def submit() -> None:
        await asyncio.wrap_future(writer.submit(success("from-a-loop")))

    asyncio.run(submit())
    assert backend.writes == [("celeriac-result-writer", ["from-a-loop"])]
    writer.close()
