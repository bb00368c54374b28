"""The map family: ``xmap`` and ``xstarmap`` (one message running a task over a list, in one
worker) and ``chunks`` (a list of argument tuples split into ``xstarmap`` messages, sent as a
group: many small calls in few messages)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celeriac.canvas.signature import Signature, maybe_signature
from celeriac.canvas.workflow import _group_result, _own_options, _Workflow
from celeriac.errors import ImproperlyConfigured

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.canvas.primitives import group
    from celeriac.canvas.signature import ResultHandle
    from celeriac.results.group import GroupResult


class _basemap(Signature):
    """A call of a builtin map task over ``it``, run as one task in one worker."""

    __slots__ = ()
    task_name = ""
    kind = ""

    def __init__(
        self, task: Any, it: Iterable[Any], app: Celeriac | None = None, **options: Any
    ) -> None:
        sig = maybe_signature(task, app)
        super().__init__(
            self.task_name,
            (),
            {"task": sig.to_dict(), "it": list(it)},
            options,
            immutable=True,
            subtask_type=self.kind,
            app=app or sig.app,
        )

    @classmethod
    def rebuild(
        cls, kwargs: dict[str, Any], options: dict[str, Any], app: Celeriac | None
    ) -> Signature:
        return cls(kwargs["task"], kwargs.get("it") or (), app=app, **options)

    def __repr__(self) -> str:
        return f"[{Signature.from_dict(self.kwargs['task'])!r}(x) for x in {self.kwargs['it']!r}]"


class xmap(_basemap):
    """``[task(x) for x in it]`` in one message: ``add.map(range(10))``."""

    __slots__ = ()
    task_name = "celery.map"
    kind = "xmap"


class xstarmap(_basemap):
    """``[task(*x) for x in it]`` in one message: ``add.starmap([(1, 2), (3, 4)])``."""

    __slots__ = ()
    task_name = "celery.starmap"
    kind = "xstarmap"


class chunks(_Workflow):
    """Split ``it`` (argument tuples) into chunks of ``n``, each one ``xstarmap`` message, sent
    as a group: many small tasks in few messages."""

    __slots__ = ()

    def __init__(
        self, task: Any, it: Iterable[Any], n: int, app: Celeriac | None = None, **options: Any
    ) -> None:
        if int(n) < 1:
            raise ImproperlyConfigured(f"chunks: n must be at least 1, not {n!r}")
        sig = maybe_signature(task, app)
        super().__init__(
            "celery.chunks",
            (),
            {"task": sig.to_dict(), "it": [list(x) for x in it], "n": int(n)},
            options,
            subtask_type="chunks",
            app=app or sig.app,
        )

    @classmethod
    def rebuild(
        cls, kwargs: dict[str, Any], options: dict[str, Any], app: Celeriac | None
    ) -> Signature:
        return cls(kwargs["task"], kwargs.get("it") or (), kwargs["n"], app=app, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> ResultHandle:
        """``chunks(...)()`` sends it, as in Celery."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> GroupResult:
        return _group_result(super().apply_async(args, kwargs, **options))

    def group(self) -> group:
        from celeriac.canvas.primitives import group

        items, n = self.kwargs["it"], self.kwargs["n"]
        parts = [items[i : i + n] for i in range(0, len(items), n)]
        return group(
            [xstarmap(self.kwargs["task"], part, app=self.app) for part in parts],
            app=self.app,
            **_own_options(self),
        )

    def freeze(
        self,
        _id: str | None = None,
        *,
        group_id: str | None = None,
        group_index: int | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
    ) -> GroupResult:
        return self.group().freeze(_id)

    def _send(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> GroupResult:
        return self.group()._send(args, kwargs, **options)

    def apply(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> GroupResult:
        return self.group().apply(args, kwargs)
