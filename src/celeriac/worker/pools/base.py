"""The pool contract: run one request somewhere and return its outcome to the event loop.

The consumer never hands a pool more requests than its ``concurrency`` (free slots), so a pool
needs no queue of its own; that is what keeps a busy slot from being handed work while an idle
one waits. A pool enforces time limits (:func:`effective_time_limits`), can stop one running
task by id (``terminate``, for ``revoke --terminate``), and can change its size at run time
(``resize``, for the autoscaler).

Who stores the result: the pool's executor does (:func:`celeriac.execution.executor.run_request`),
in the thread or child that ran the task; when that thread or child cannot (a child killed by
the OS or by a hard time limit), the pool stores the FAILURE itself before returning.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Container, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from celeriac.context import Request
from celeriac.execution.executor import Outcome

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.task import Task


#: The task options time limits declare (see :func:`effective_time_limits`).
TASK_OPTIONS: dict[str, Any] = {"time_limit": None, "soft_time_limit": None}


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """What a pool needs beyond its size; every field has a "no limit" default."""

    #: ``module:attr`` that a child process imports to find the app (prefork needs it).
    app_spec: str | None = None
    #: Replace a child after it ran this many tasks (prefork).
    max_tasks_per_child: int | None = None
    #: Replace a child whose resident memory exceeds this many bytes after a task (prefork).
    max_memory_per_child: int | None = None
    #: Worker-wide defaults (``--time-limit``/``--soft-time-limit``), in seconds.
    time_limit: float | None = None
    soft_time_limit: float | None = None
    #: ``worker_pool_start_method``: how prefork children start (None: the platform's best;
    #: see :mod:`~celeriac.worker.pools.starter`).
    start_method: str | None = None
    #: ``worker_prefork_fetch``: prefork children fetch their own messages where the broker's
    #: transport can (:mod:`~celeriac.worker.pools.fetching`).
    fetch: bool = False


def effective_time_limits(
    task: Task[Any, Any], request: Request, options: PoolOptions
) -> tuple[float | None, float | None]:
    """``(hard, soft)`` for one run: the message's own, else the task's, else the worker's,
    else the app's ``task_time_limit``/``task_soft_time_limit``."""
    msg_hard, msg_soft = request.timelimit
    conf = task.app.conf
    hard = msg_hard or task.options.get("time_limit") or options.time_limit or conf.task_time_limit
    soft = (
        msg_soft
        or task.options.get("soft_time_limit")
        or options.soft_time_limit
        or conf.task_soft_time_limit
    )
    return (float(hard) if hard else None, float(soft) if soft else None)


OnStart = Callable[[], None]


class Pool(abc.ABC):
    """Runs requests with at most ``concurrency`` at a time."""

    name = "base"
    #: Requests the consumer may hand over per unit of concurrency. Pools whose threads or
    #: children pull the next request themselves from an internal queue (threads, solo,
    #: prefork) take 2: a thread that finishes starts its next request at once, without a round
    #: trip through the event loop; the queue is shared, so no idle one waits while work is
    #: queued behind a busy one.
    depth: ClassVar[int] = 1
    #: Ids revoked on this worker (the worker hands its set over before ``start``): a pool that
    #: queues requests of its own checks it when a thread picks one up, so a revoke that
    #: arrives while a request waits in that queue still stops it.
    revoked: Container[str] = frozenset()

    def __init__(
        self,
        app: Celeriac,
        concurrency: int,
        hostname: str,
        options: PoolOptions | None = None,
    ) -> None:
        self.app = app
        self.concurrency = concurrency
        self.hostname = hostname
        self.options = options or PoolOptions()

    async def start(self) -> None:
        """Start the pool's threads or processes."""

    @abc.abstractmethod
    async def run(
        self, task: Task[Any, Any], request: Request, on_start: OnStart | None = None
    ) -> Outcome:
        """Execute and finish one request (store result, callbacks); return its outcome.

        ``on_start`` is called on the event loop when the request really starts (a thread or
        child took it; it may wait in the pool's queue before that): the consumer acks early
        tasks then, not before. Enforces the request's time limits. Never raises for a task's
        own failure.
        """

    async def terminate(self, task_id: str) -> bool:
        """Stop the running task ``task_id`` now; True if it was running here and was stopped.

        The task ends as REVOKED (``TaskRevokedError("terminated")``). Pools that cannot stop
        running code (threads) return False and say so in their docs.
        """
        return False

    def withdraw(self, task_ids: Collection[str]) -> set[str]:
        """Take back requests handed to ``run`` that no thread or child has started (warm
        shutdown returns them to the broker); the ids withdrawn. Pools with no queue of their
        own (``depth`` 1) have nothing to give back."""
        return set()

    async def resize(self, concurrency: int) -> None:
        """Grow or shrink to ``concurrency`` (>= 1); shrinking lets running tasks finish."""
        self.concurrency = concurrency

    @property
    def fetching(self) -> bool:
        """Whether the pool's processes fetch their own messages once :meth:`serve` is called
        (prefork with ``worker_prefork_fetch``): the consumer then fetches nothing itself."""
        return False

    def serve(
        self, host: Any, transport: Any, state: Any, queues: Sequence[str]
    ) -> None:  # pragma: no cover - only pools that fetch are served
        """Start fetching from ``queues`` (see :class:`~.overseer.Host` for ``host``)."""
        raise NotImplementedError(f"the {self.name} pool does not fetch")

    def set_queues(self, queues: Sequence[str]) -> None:
        """Fetch from ``queues`` from now on (a pool that fetches)."""

    def sync(self) -> None:
        """Bring the worker's state up to date with what the pool runs (a pool that fetches)."""

    def rules_changed(self) -> None:
        """What the consumer keeps for itself changed (rate limits, task events): a pool that
        fetches tells its processes now."""

    def running_fetched(self) -> int:
        """How many tasks the pool's processes run that they fetched themselves."""
        return 0

    async def stop(self, wait: bool = True) -> None:
        """Stop the pool; ``wait=False`` abandons running work (cold shutdown)."""
