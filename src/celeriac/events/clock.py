"""A Lamport clock: the logical time every event carries as ``clock``.

Wall clocks of two hosts disagree; a Lamport clock orders events causally instead. A sender
moves its clock forward for each event it sends; a receiver that sees a larger value jumps past
it. Celery's monitors sort a task's events by it, so every celeriac event carries one.
"""

from __future__ import annotations

import threading


class LamportClock:
    """Thread-safe: a worker's loop and its producer threads may both send events."""

    __slots__ = ("_lock", "value")

    def __init__(self, initial: int = 0) -> None:
        self.value = initial
        self._lock = threading.Lock()

    def forward(self) -> int:
        """The clock value for an event sent now."""
        with self._lock:
            self.value += 1
            return self.value

    def adjust(self, other: int) -> int:
        """Account for a received value: past the larger of the two."""
        with self._lock:
            self.value = max(self.value, other) + 1
            return self.value

    def __repr__(self) -> str:
        return f"<LamportClock {self.value}>"
