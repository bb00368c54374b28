"""``GroupResult``: the results of a group, in the order its tasks were given.

A group's member ids are saved in the backend when the group is sent (``save()``), so a result
handle can be rebuilt from the group id alone in another process (``GroupResult.restore(id)``).
Waiting shares one deadline across the members, and ``get()`` returns the values in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from celeriac import states
from celeriac.context import current_app
from celeriac.errors import ImproperlyConfigured, TimeoutError
from celeriac.results.result import AsyncResult

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.results.base import Backend

#: A member: a task's result (a nested group's result is a GroupResult, itself an AsyncResult).
Child: TypeAlias = AsyncResult[Any]


class GroupResult(AsyncResult[list[Any]]):
    """A handle on a group's results: ``get``, ``ready``, ``completed_count``, ``revoke``...

    It is an :class:`AsyncResult` whose value is the list of its members' values, so a workflow's
    result has one type whether it ends in a task or in a group.
    """

    def __init__(
        self,
        id: str,
        results: Sequence[Child],
        app: Celeriac | None = None,
        parent: AsyncResult[Any] | None = None,
    ) -> None:
        super().__init__(id, app.backend if app is not None else None, None, app, parent)
        self.results: list[Child] = list(results)

    # -- the members --------------------------------------------------------------------------
    @property
    def children(self) -> list[Child]:
        return self.results

    @property
    def result(self) -> list[Any]:
        """Each member's value (or exception) as it stands now, without waiting."""
        return [r.result for r in self.results]

    info = result

    @property
    def traceback(self) -> str | None:
        return None

    def __iter__(self) -> Iterator[Child]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> Child:
        return self.results[index]

    # -- state ----------------------------------------------------------------------------------
    def ready(self) -> bool:
        """Every member has finished (whatever its state)."""
        return all(r.ready() for r in self.results)

    def successful(self) -> bool:
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        return any(r.failed() for r in self.results)

    def _failure(self) -> BaseException | None:
        """The first failed member's error, in order (what a chord's ``get()`` raises)."""
        for result in self.results:
            error = result._failure()
            if error is not None:
                return error
        return None

    def waiting(self) -> bool:
        return not self.ready()

    def completed_count(self) -> int:
        """How many members succeeded (Celery's meaning)."""
        return sum(1 for r in self.results if r.successful())

    # -- waiting ----------------------------------------------------------------------------------
    # Celery's ResultSet order from the fourth argument on, not AsyncResult's: Celery's
    # GroupResult is no AsyncResult, and code written for it passes these by position.
    def get(  # type: ignore[override]
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.1,
        callback: Callable[[str, Any], Any] | None = None,
        no_ack: bool = True,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
        disable_sync_subtasks: bool = True,
        on_interval: Callable[[], Any] | None = None,
    ) -> list[Any]:
        """The members' values in order, waiting at most ``timeout`` seconds for all of them;
        the first failure (in order) is re-raised unless ``propagate=False``. Celery's
        signature, in Celery's order (``join`` is the same): with ``callback``, each member's
        ``callback(task_id, value)`` is called in order instead and ``[]`` is returned;
        ``on_message`` sees each member's states and ``on_interval`` is called at each look, as
        in :meth:`AsyncResult.get`; ``no_ack`` is accepted for Celery's sake."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for result in self.results:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                value = result.get(
                    left,
                    propagate,
                    interval,
                    on_message=on_message,
                    on_interval=on_interval,
                    disable_sync_subtasks=disable_sync_subtasks,
                )
            except TimeoutError:
                raise TimeoutError(
                    f"group {self.id} not ready after {timeout}s "
                    f"({self.completed_count()}/{len(self.results)} succeeded)"
                ) from None
            if callback is not None:
                callback(result.id, value)
            else:
                values.append(value)
        return values

    join = get

    async def aget(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """The async twin of :meth:`get`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for result in self.results:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            values.append(await result.aget(left, propagate))
        return values

    ajoin = aget

    def collect(self) -> Iterator[tuple[AsyncResult[Any], Any]]:
        """``(result, value)`` for every member and what they sent, depth first."""
        for result in self.results:
            yield from result.collect()

    # -- control and storage ----------------------------------------------------------------------
    def revoke(self, terminate: bool = False) -> None:
        """Revoke every member (those not yet run are skipped by the workers)."""
        ids: list[str] = []
        for result in self.results:
            ids.extend(_ids(result))
        self._group_app().control.revoke(ids, terminate=terminate)

    def save(self, backend: Backend | None = None) -> GroupResult:
        """Save the member ids under the group id (sending a group does this already)."""
        store = backend or self._backend()
        store.save_group(self.id, [r.id for r in self.results])
        return self

    def forget(self) -> None:
        """Remove the saved group and every member's stored result."""
        backend = self._backend()
        for result in self.results:
            result.forget()
        backend.delete_group(self.id)

    @classmethod
    def restore(
        cls, group_id: str, app: Celeriac | None = None, backend: Backend | None = None
    ) -> GroupResult | None:
        """The group saved under ``group_id``, or ``None`` when nothing was saved (the default
        app's backend unless ``app`` or ``backend`` is given, as Celery's)."""
        if app is None and backend is None:
            app = current_app()
        store = backend or (app.backend if app is not None else None)
        if store is None:
            raise ImproperlyConfigured("restoring a group needs a result backend")
        ids = store.restore_group(group_id)
        if ids is None:
            return None
        return cls(group_id, [AsyncResult(i, store, app=app) for i in ids], app=app)

    def _group_app(self) -> Celeriac:
        if self.app is None:
            raise ImproperlyConfigured("this GroupResult has no app")
        return self.app

    @property
    def state(self) -> str:
        """SUCCESS when all succeeded, FAILURE when one failed and all are done, else PENDING."""
        if not self.ready():
            return states.PENDING
        return states.SUCCESS if self.successful() else states.FAILURE

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and [r.id for r in other] == [r.id for r in self]
        return super().__eq__(other)

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"


def _ids(result: Child) -> list[str]:
    if isinstance(result, GroupResult):
        return [i for r in result.results for i in _ids(r)]
    return [result.id]
