"""Reading a prefork child's pipe with one ``read`` per wake-up instead of two per message.

``multiprocessing.connection.Connection.recv`` reads a message's 4-byte length, then its body:
two system calls, each with its own Python around it (closed and readable checks, a BytesIO),
for every message each way between the worker and its children, one per task. Both ends here
read whatever the pipe holds in one ``os.read`` and cut it into messages with the same framing
(a big-endian ``int32`` length; ``-1`` and a ``uint64`` after it for a body of 2 GiB or more),
so the writers keep ``Connection.send``. Usually one read holds exactly one message, which is
unpickled straight from the read's bytes, without a copy.
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any

__all__ = ["READ_SIZE", "Frames", "read_message"]

#: The most one read takes; a longer message is assembled over several.
READ_SIZE = 65536
_INT = struct.Struct("!i")
_LONG = struct.Struct("!Q")


class Frames:
    """The messages in a byte stream fed in arbitrary pieces, unpickled, in order."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """The messages completed by ``data``; an incomplete one waits for the next feed."""
        buffer = self._buffer
        if not buffer and len(data) >= 4:  # the common case: exactly one whole message
            (size,) = _INT.unpack_from(data)
            if size >= 0 and len(data) == 4 + size:
                return [pickle.loads(memoryview(data)[4:])]
        buffer += data
        messages: list[Any] = []
        position = 0
        while len(buffer) - position >= 4:
            (size,) = _INT.unpack_from(buffer, position)
            start = position + 4
            if size == -1:
                if len(buffer) - start < 8:
                    break
                (size,) = _LONG.unpack_from(buffer, start)
                start += 8
            end = start + size
            if len(buffer) < end:
                break
            messages.append(pickle.loads(memoryview(buffer)[start:end]))
            position = end
        del buffer[:position]
        return messages

    @property
    def pending(self) -> int:
        """Bytes of a message not complete yet."""
        return len(self._buffer)


def read_message(fd: int, frames: Frames, queue: list[Any]) -> Any:
    """The next message on the blocking ``fd``: from ``queue`` (what an earlier read brought
    beyond the message it was called for) or read now. Raises ``EOFError`` at end of file."""
    while not queue:
        data = os.read(fd, READ_SIZE)
        if not data:
            raise EOFError
        queue.extend(frames.feed(data))
    return queue.pop(0)
