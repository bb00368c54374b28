"""Result handles: ``AsyncResult`` reads a task's state from the backend; ``EagerResult`` holds it.

``get()`` blocks on the backend's own wait (a condition variable in memory, a pub/sub message on
Redis, short polls on SQLite) and re-raises the task's exception with its own type where that type
is loaded in this process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from celeriac import states
from celeriac.context import current_request, default_app
from celeriac.errors import ImproperlyConfigured, TimeoutError
from celeriac.results.base import Backend, ResultMeta

if TYPE_CHECKING:
    from celeriac.app import Celeriac

R = TypeVar("R")


def _raise_or_return(meta: ResultMeta, propagate: bool) -> Any:
    if meta.status in states.PROPAGATE_STATES:
        exc = meta.exception()
        if propagate and exc is not None:
            raise exc
        return exc
    return meta.result


class AsyncResult(Generic[R]):
    """A handle on a task's outcome, by id. Cheap to create; every property asks the backend.

    Celery's signature: ``AsyncResult(id)`` alone reads through the default app (the app created
    last, or the one given to ``set_default()``); ``backend=`` and ``app=`` name others.
    """

    def __init__(
        self,
        id: str,
        backend: Backend | None = None,
        task_name: str | None = None,
        app: Celeriac | None = None,
        parent: AsyncResult[Any] | None = None,
        *,
        ignored: bool = False,
    ) -> None:
        if app is None and backend is None:
            app = default_app()
        self.id = id
        self.backend = backend if backend is not None or app is None else app.backend
        self.app = app
        self.task_name = task_name
        #: The result this one follows in a chain (set when a workflow is frozen; not stored).
        self.parent: AsyncResult[Any] | None = parent
        #: Sent with ``ignore_result``: nothing will be stored, so ``get()`` returns None at once
        #: (Celery's ``ignored``) instead of waiting for ever.
        self.ignored = ignored

    @property
    def task_id(self) -> str:
        return self.id

    def _backend(self) -> Backend:
        if self.backend is None:
            raise ImproperlyConfigured(
                "no result backend is configured: set result_backend to read results"
                if self.app is not None
                else "no app to read this result: create a Celeriac app first, or pass backend="
            )
        return self.backend

    def _meta(self) -> ResultMeta:
        return self._backend().get_meta(self.id)

    @property
    def state(self) -> str:
        return self._meta().status

    status = state

    @property
    def result(self) -> Any:
        """The return value when SUCCESS, the exception when it failed, else what was stored."""
        meta = self._meta()
        exc = meta.exception()
        return exc if exc is not None else meta.result

    info = result

    @property
    def traceback(self) -> str | None:
        return self._meta().traceback

    @property
    def date_done(self) -> float | None:
        return self._meta().date_done

    def ready(self) -> bool:
        return self._meta().ready

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.1,
        no_ack: bool = True,
        follow_parents: bool = True,
        callback: Callable[[str, Any], Any] | None = None,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
        on_interval: Callable[[], Any] | None = None,
        disable_sync_subtasks: bool = True,
    ) -> R:
        """Wait for the outcome; re-raise the task's exception unless ``propagate=False``.

        Celery's signature, in Celery's order (``get(10, True, 0.5)`` means what it means
        there). Raises :class:`~celeriac.errors.TimeoutError` after ``timeout`` seconds. Inside
        a task this refuses to wait (the classic deadlock of a pool waiting on itself) unless
        ``disable_sync_subtasks=False``. ``on_message`` is called with each new state the task
        stores while it is waited on (``update_state`` progress, then the outcome), as a dict
        with ``task_id``, ``status``, ``result``, ``traceback``...; the states are read every
        ``interval`` seconds (``on_interval`` is called each time) and the outcome as soon as
        it is stored. ``follow_parents``: raise the error of a failed parent first (a chain's
        earlier step, a chord's member), as Celery does. ``callback(task_id, value)`` is called
        with the outcome. ``no_ack`` is accepted for Celery's sake: reading a result consumes
        nothing here.
        """
        if disable_sync_subtasks and current_request() is not None:
            request = current_request()
            if request is not None and not request.is_eager:
                raise RuntimeError(
                    "never call result.get() within a task: it can deadlock the pool "
                    "(use a chain or callback, or pass disable_sync_subtasks=False)"
                )
        if self.ignored:
            return None  # type: ignore[return-value]
        if on_message is not None or on_interval is not None:
            meta = self._watch(timeout, on_message, interval, on_interval)
        else:
            meta = self._backend().wait_for(self.id, timeout)
        if not meta.ready:
            raise TimeoutError(f"task {self.id} not ready after {timeout}s (state {meta.status})")
        if (
            propagate
            and follow_parents
            and meta.status in states.PROPAGATE_STATES
            and self.parent is not None
        ):
            cause = self._parent_error()
            if cause is not None:
                raise cause
        value: R = _raise_or_return(meta, propagate)
        if callback is not None:
            callback(self.id, value)
        return value

    def _watch(
        self,
        timeout: float | None,
        on_message: Callable[[dict[str, Any]], Any] | None,
        interval: float,
        on_interval: Callable[[], Any] | None = None,
    ) -> ResultMeta:
        """Wait for the outcome, telling ``on_message`` of every state seen on the way and
        calling ``on_interval`` at each look."""
        backend = self._backend()
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: tuple[str, Any] | None = None
        while True:
            meta = backend.get_meta(self.id)
            if (meta.status, meta.result) != seen and meta.status != states.PENDING:
                seen = (meta.status, meta.result)
                if on_message is not None:
                    on_message(meta.to_dict())
            if on_interval is not None:
                on_interval()
            left = None if deadline is None else deadline - time.monotonic()
            if meta.ready or (left is not None and left <= 0):
                return meta
            # wakes at once when the outcome is stored; progress is read each interval
            wait = interval if left is None else min(interval, left)
            meta = backend.wait_for(self.id, wait)
            if meta.ready and (meta.status, meta.result) != seen:
                if on_message is not None:
                    on_message(meta.to_dict())
                return meta

    def _parent_error(self) -> BaseException | None:
        """The error of the earliest failed result this one follows (Celery's ``get()`` raises
        that one: a chord whose header failed raises the member's own error, while its stored
        result is the ``ChordError``)."""
        parents: list[AsyncResult[Any]] = []
        node = self.parent
        while node is not None:
            parents.append(node)
            node = node.parent
        for parent in reversed(parents):
            error: BaseException | None = parent._failure()
            if error is not None:
                return error
        return None

    def _failure(self) -> BaseException | None:
        """This result's own stored exception, if it failed (no waiting)."""
        meta = self._meta()
        return meta.exception() if meta.status in states.PROPAGATE_STATES else None

    async def aget(self, timeout: float | None = None, propagate: bool = True) -> R:
        """The async twin of :meth:`get`: waits without blocking the event loop."""
        if self.ignored:
            return None  # type: ignore[return-value]
        meta = await self._backend().await_for(self.id, timeout)
        if not meta.ready:
            raise TimeoutError(f"task {self.id} not ready after {timeout}s (state {meta.status})")
        if propagate and meta.status in states.PROPAGATE_STATES and self.parent is not None:
            cause = await asyncio.to_thread(self._parent_error)
            if cause is not None:
                raise cause
        value: R = _raise_or_return(meta, propagate)
        return value

    def forget(self) -> None:
        """Remove the stored result."""
        self._backend().forget(self.id)

    @property
    def children(self) -> list[AsyncResult[Any]]:
        """The tasks this task sent while it ran (and the next step of its chain), once stored."""
        meta = self._meta()
        return [AsyncResult(str(c), self.backend, app=self.app) for c in meta.children or ()]

    @property
    def graph(self) -> dict[AsyncResult[Any], list[AsyncResult[Any]]]:
        """This result and every result that follows it (the tasks it sent, the rest of its
        chain), each mapped to its children, in breadth-first order; read from the stored
        results, without waiting (Celery's ``DependencyGraph`` iterates the same nodes)."""
        graph: dict[AsyncResult[Any], list[AsyncResult[Any]]] = {}
        todo = [self]
        while todo:
            node = todo.pop(0)
            if node in graph:
                continue
            graph[node] = node.children
            todo.extend(graph[node])
        return graph

    def collect(self) -> Iterator[tuple[AsyncResult[Any], Any]]:
        """``(result, value)`` for this task, then depth first for every task it sent, waiting
        for each (a failure is re-raised, as by :meth:`get`)."""
        yield self, self.get(disable_sync_subtasks=False)
        for child in self.children:
            yield from child.collect()

    def revoke(self, terminate: bool = False) -> None:
        """Ask the workers not to run this task (and, with ``terminate``, to stop it)."""
        if self.app is None:
            raise ImproperlyConfigured("revoking needs the app this result came from")
        self.app.control.revoke(self.id, terminate=terminate)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"


class EagerResult(AsyncResult[R]):
    """The outcome of a task run in this process (``apply()`` or ``task_always_eager``)."""

    def __init__(
        self,
        meta: ResultMeta,
        app: Celeriac | None = None,
        exception: BaseException | None = None,
    ) -> None:
        # no backend to read, and no default app to look for: the outcome is here
        self.id, self.backend, self.app, self.task_name = meta.task_id, None, app, meta.name
        self.parent, self.ignored = None, False
        self._eager_meta = meta
        self._exception = exception

    def _meta(self) -> ResultMeta:
        return self._eager_meta

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.1,
        no_ack: bool = True,
        follow_parents: bool = True,
        callback: Callable[[str, Any], Any] | None = None,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
        on_interval: Callable[[], Any] | None = None,
        disable_sync_subtasks: bool = True,
    ) -> R:
        if on_message is not None:
            on_message(self._eager_meta.to_dict())
        if self._exception is not None and self._eager_meta.status in states.PROPAGATE_STATES:
            if propagate:
                raise self._exception
            value: R = self._exception  # type: ignore[assignment]
        else:
            value = _raise_or_return(self._eager_meta, propagate)
        if callback is not None:
            callback(self.id, value)
        return value

    @property
    def result(self) -> Any:
        if self._exception is not None:
            return self._exception
        return self._eager_meta.result

    info = result

    async def aget(self, timeout: float | None = None, propagate: bool = True) -> R:
        return self.get(timeout, propagate)

    def forget(self) -> None:
        """Nothing is stored for an eager result."""
