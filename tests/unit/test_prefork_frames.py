"""The prefork pipe's reader (``worker/pools/frames.py``): multiprocessing's framing, read in
any pieces, one read per wake-up."""

from __future__ import annotations

import multiprocessing
import pickle
import struct
import threading
from typing import Any

import pytest

from celeriac.worker.pools.frames import Frames, read_message


def framed(message: Any) -> bytes:
    body = pickle.dumps(message)
    return struct.pack("!i", len(body)) + body


MESSAGES: list[Any] = [("run", 1), {"big": "x" * 40_000}, None, b"", ("done", [1, 2, 3])]


def test_one_whole_message_is_read_as_it_came() -> None:
    assert Frames().feed(framed(("run", 1))) == [("run", 1)]


@pytest.mark.parametrize("piece", [1, 3, 4, 5, 7, 64, 4096])
def test_messages_cut_anywhere_come_out_whole_and_in_order(piece: int) -> None:
    stream = b"".join(framed(m) for m in MESSAGES)
    frames = Frames()
    got: list[Any] = []
    for start in range(0, len(stream), piece):
        got += frames.feed(stream[start : start + piece])
    assert got == MESSAGES
    assert frames.pending == 0


def test_the_long_header_of_a_huge_message_is_read_too() -> None:
    body = pickle.dumps("long")
    stream = struct.pack("!i", -1) + struct.pack("!Q", len(body)) + body + framed("next")
    frames = Frames()
    assert frames.feed(stream[:6]) == []
    assert frames.feed(stream[6:]) == ["long", "next"]


def test_read_message_reads_what_a_multiprocessing_connection_sent() -> None:
    """The writer is ``Connection.send`` (the child's and the parent's writes stay theirs),
    including a message over 16 KiB, whose header it writes apart from the body."""
    reader, writer = multiprocessing.Pipe(duplex=False)

    def send() -> None:
        for message in MESSAGES:
            writer.send(message)
        writer.close()

    sender = threading.Thread(target=send)
    sender.start()
    frames = Frames()
    queued: list[Any] = []
    got = [read_message(reader.fileno(), frames, queued) for _ in MESSAGES]
    with pytest.raises(EOFError):
        read_message(reader.fileno(), frames, queued)
    sender.join()
    reader.close()
    assert got == MESSAGES
