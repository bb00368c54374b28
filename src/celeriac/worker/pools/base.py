"""The pool contract: run one request somewhere and return its outcome to the event loop.

The consumer never hands a pool more requests than it has free slots (``concurrency``), so a
pool needs no queue of its own; that is what keeps a busy slot from being handed work while an
idle one waits.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

from celeriac.context import Request
from celeriac.worker.executor import Outcome

if TYPE_CHECKING:
    from celeriac.task import Task


class Pool(abc.ABC):
    """Runs requests with at most ``concurrency`` at a time."""

    name = "base"

    def __init__(self, concurrency: int, hostname: str) -> None:
        self.concurrency = concurrency
        self.hostname = hostname

    async def start(self) -> None:
        """Start the pool's threads or processes."""

    @abc.abstractmethod
    async def run(self, task: Task[Any, Any], request: Request) -> Outcome:
        """Execute and finish one request (store result, callbacks); return its outcome."""

    async def stop(self, wait: bool = True) -> None:
        """Stop the pool; ``wait=False`` abandons running work (cold shutdown)."""
