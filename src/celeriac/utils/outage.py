"""One log line per outage, not one traceback per message.

When the broker or the result backend goes away, every message in flight fails the same way. An
:class:`Outage` logs the first failure at ERROR, the rest at DEBUG, and the recovery once at
WARNING, so the log of a worker that lived through a Redis restart reads as two lines.
"""

from __future__ import annotations

import logging
import threading


class Outage:
    """Tracks whether a dependency (``what``) is down; thread-safe, cheap when all is well."""

    def __init__(self, what: str, logger: logging.Logger) -> None:
        self.what = what
        self.logger = logger
        self.down = False
        self._lock = threading.Lock()

    def failed(self, exc: BaseException, doing: str = "") -> None:
        """Report one failure; only the first of an outage is logged above DEBUG."""
        detail = f" while {doing}" if doing else ""
        with self._lock:
            first, self.down = not self.down, True
        if first:
            self.logger.error(
                "%s unavailable%s: %s (retrying; further errors at DEBUG until it is back)",
                self.what,
                detail,
                exc,
            )
        else:
            self.logger.debug("%s still unavailable%s: %s", self.what, detail, exc)

    def ok(self) -> None:
        """Report a success; logs the recovery once."""
        if not self.down:
            return
        with self._lock:
            was_down, self.down = self.down, False
        if was_down:
            self.logger.warning("%s is back", self.what)
