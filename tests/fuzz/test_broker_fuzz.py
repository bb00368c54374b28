"""Fuzzed messages through a real worker on each broker: dead-lettered, and the worker goes on.

A batch of generated malformed task messages (each with one defect a worker must refuse: a body
of the wrong shape or types, invalid UTF-8, nesting past any depth, an unknown content type,
encoding or compression, a compression bomb past the worker's 64 MiB limit, an unreadable
``retries`` or ``eta``, an unknown task) is published straight into the queue, then a good task.
Every malformed message must land in the dead-letter queue with a readable reason, the good task
must run, and the worker must still be alive with a bounded RSS.

Envelopes that celeriac's own :class:`Message` cannot represent (not JSON, bad base64, headers
that are not an object) are covered in-process by :mod:`tests.fuzz.test_decode_fuzz`.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))  # the harness

from events_brokers import Broker, open_broker
from worker_harness import WorkerProcess, on_transport, start_cli_worker

from celeriac.protocol.compression import MAX_DECOMPRESSED_SIZE
from celeriac.protocol.message import Message
from celeriac.transports.base import DeadLetter, Outgoing

from .strategies import deep_nesting, json_values

BATCH = 40
#: Batches per broker, all to the same worker (every defect is in each batch, drawn anew).
EXAMPLES = 3
WAIT = 20.0
#: The worker's RSS after the batch: bombs are refused at 64 MiB each, one at a time.
RSS_BOUND = 400 * 1024 * 1024

_BLOCK = 16 * 1024 * 1024
_COPIES = MAX_DECOMPRESSED_SIZE // _BLOCK + 2  # past the worker's limit


def _bombs() -> dict[str, bytes]:
    """One bomb per codec expanding past the worker's limit, built from one compressed block."""
    zeros = bytes(_BLOCK)
    engine = zlib.compressobj(9)
    head = engine.compress(zeros) + engine.flush(zlib.Z_FULL_FLUSH)
    segment = engine.compress(zeros) + engine.flush(zlib.Z_FULL_FLUSH)
    return {
        "application/x-gzip": head + segment * _COPIES,
        "gzip": gzip.compress(zeros, 9) * _COPIES,
        "application/x-bz2": bz2.compress(zeros, 9) * _COPIES,
        "application/x-lzma": lzma.compress(zeros) * _COPIES,
    }


BOMBS = _bombs()


def _not_a_body(value: Any) -> bool:
    """Whether ``value`` fails the ``[args, kwargs, embed]`` check (else it would run)."""
    if not isinstance(value, list) or len(value) != 3:
        return True
    args, kwargs, embed = value
    return not (
        isinstance(args, list)
        and isinstance(kwargs, dict)
        and (embed is None or isinstance(embed, dict))
    )


DEFECTS = [
    "shape",
    "types",
    "utf8",
    "nesting",
    "huge",
    "content-type",
    "content-encoding",
    "compression",
    "bomb",
    "retries",
    "eta",
    "task",
]


@st.composite
def malformed(draw: st.DrawFn, defect: str) -> tuple[str, Message]:
    """``(defect, message)``: a task message with exactly one defect a worker must refuse."""
    task_id = str(uuid.uuid4())
    headers: dict[str, Any] = {"lang": "py", "task": "ev.add", "id": task_id, "retries": 0}
    body = b"[[1, 2], {}, null]"
    content_type, content_encoding = "application/json", "utf-8"
    properties: dict[str, Any] = {}
    if defect == "shape":
        body = orjson.dumps(draw(json_values.filter(_not_a_body)))
    elif defect == "types":
        body = orjson.dumps(
            draw(
                st.tuples(json_values, json_values, json_values).filter(
                    lambda item: _not_a_body(list(item))
                )
            )
        )
    elif defect == "utf8":
        body = b'[[1, "\xff' + draw(st.binary(max_size=16)) + b'"], {}, null]'
    elif defect == "nesting":
        body = draw(deep_nesting())
    elif defect == "huge":
        body = orjson.dumps([list(range(draw(st.integers(1_000, 50_000)))), "kw", None])
    elif defect == "content-type":
        content_type = draw(st.sampled_from(["application/x-nope", "text/plain", "image/png"]))
    elif defect == "content-encoding":
        content_encoding = draw(st.sampled_from(["no-such-codec", "x-klingon"]))
    elif defect == "compression":
        headers["compression"] = draw(st.sampled_from(["application/x-rar", "lz4", "brotli"]))
    elif defect == "bomb":
        headers["compression"] = draw(st.sampled_from(sorted(BOMBS)))
        body = BOMBS[headers["compression"]]
    elif defect == "retries":
        headers["retries"] = draw(st.sampled_from(["x", "1.5", [1], {"a": 1}]))
    elif defect == "eta":
        # AMQP headers hold signed 64-bit ints at most: pamqp cannot even publish a larger one
        small = st.integers(-(2**31), 2**31) | st.text(max_size=8) | st.none()
        headers["eta"] = draw(
            st.sampled_from(["not-a-time", "2026-13-45T99:99:99"])
            | st.lists(small, min_size=1, max_size=3)
        )
    else:
        headers["task"] = draw(st.sampled_from(["no.such.task", "", "ev.add "]))
    return defect, Message(headers, body, content_type, content_encoding, properties)


class Fuzzed:
    """A worker on ``broker`` and a transport to push raw messages and read dead letters."""

    def __init__(self, broker: Broker, tmp_path: Path) -> None:
        self.broker = broker
        self.app = broker.app()
        self.worker: WorkerProcess = start_cli_worker(
            "apps.events_tasks", broker.env(), tmp_path, pool="threads", concurrency=2
        )

    def publish(self, messages: list[Message]) -> None:
        queue = self.app.queues()[0]
        exchange = queue.exchange.name if queue.exchange is not None else ""

        async def send(transport: Any) -> None:
            await transport.declare_queue(queue)
            await transport.publish_batch(
                [
                    Outgoing(message, exchange, queue.routing_key or queue.name)
                    for message in messages
                ]
            )

        on_transport(self.app, send)

    def dead_letters(self) -> list[DeadLetter]:
        async def read(transport: Any) -> list[DeadLetter]:
            found: list[DeadLetter] = await transport.dead_letters(self.broker.queue, limit=1000)
            return found

        result: list[DeadLetter] = on_transport(self.app, read)
        return result

    def rss(self) -> int:
        with open(f"/proc/{self.worker.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def close(self) -> None:
        try:
            self.worker.stop()
        finally:
            self.app.close()


@pytest.fixture(params=["sqlite", "redis", "amqp"])
def fuzzed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fuzzed]:
    with open_broker(request.param, tmp_path) as broker:
        made = Fuzzed(broker, tmp_path)
        try:
            yield made
        finally:
            made.close()


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    phases=[Phase.generate],
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(batch=st.tuples(*(malformed(DEFECTS[i % len(DEFECTS)]) for i in range(BATCH))))
def test_malformed_messages_are_dead_lettered_and_the_worker_goes_on(
    fuzzed: Fuzzed, batch: tuple[tuple[str, Message], ...]
) -> None:
    started = time.monotonic()
    fuzzed.publish([message for _, message in batch])
    good = str(uuid.uuid4())
    fuzzed.publish([Message({"lang": "py", "task": "ev.add", "id": good}, b"[[20, 22], {}, null]")])
    fuzzed.worker.wait_for_line(rf"ev\.add\[{good}\] succeeded", WAIT)
    deadline = time.monotonic() + WAIT
    ids = [message.id.encode() for _, message in batch]

    def mine() -> list[DeadLetter]:  # the earlier batches' letters are there too
        return [letter for letter in fuzzed.dead_letters() if any(i in letter.payload for i in ids)]

    letters = mine()
    while len(letters) < BATCH and time.monotonic() < deadline:
        time.sleep(0.05)
        letters = mine()
    reasons = {
        message.id: letter.reason
        for _, message in batch
        for letter in letters
        if message.id.encode() in letter.payload
    }
    missing = [(defect, message.id) for defect, message in batch if message.id not in reasons]
    assert not missing, f"not dead-lettered: {missing}\n{fuzzed.worker.output()[-3000:]}"
    twice = [
        letter.reason[:200]
        for letter in letters
        if sum(letter.payload == other.payload for other in letters) > 1
    ]
    assert len(letters) == BATCH, (len(letters), twice)
    for defect, message in batch:
        reason = reasons[message.id]
        assert reason and reason.isprintable() and len(reason) < 2000, (defect, reason)
        if defect == "bomb":
            assert f"limit of {MAX_DECOMPRESSED_SIZE} bytes" in reason, reason
    assert fuzzed.worker.running
    rss = fuzzed.rss()
    assert rss < RSS_BOUND, f"worker RSS {rss / 2**20:.0f} MiB"
    print(
        f"{fuzzed.broker.name}: {BATCH} malformed + 1 good in {time.monotonic() - started:.1f} s,"
        f" ({len({defect for defect, _ in batch})} kinds of defect),"
        f" worker RSS {rss / 2**20:.0f} MiB"
    )
