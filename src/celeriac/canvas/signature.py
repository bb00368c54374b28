"""A signature: one task call (name, args, kwargs, options) as data that can travel in messages.

It serializes to Celery's plain-dict layout (``task``, ``args``, ``kwargs``, ``options``,
``immutable``, ``subtask_type``), so ``link=`` callbacks and, later, whole workflows ride inside a
message body and are rebuilt by the worker from the task name alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from celeriac.errors import ImproperlyConfigured

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.results.result import AsyncResult


@dataclass(frozen=True, slots=True)
class Signature:
    """A task call as data. ``immutable`` signatures ignore the parent's result in a callback."""

    task: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    immutable: bool = False
    subtask_type: str | None = None
    app: Celeriac | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Celery's dict layout, JSON-ready when args and kwargs are."""
        return {
            "task": self.task,
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "options": dict(self.options),
            "immutable": self.immutable,
            "subtask_type": self.subtask_type,
            "chord_size": None,
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any] | Signature, app: Celeriac | None = None
    ) -> Signature:
        """Rebuild a signature from its dict; a malformed one raises ImproperlyConfigured."""
        if isinstance(data, Signature):
            return data if app is None else replace(data, app=app)
        if not isinstance(data, Mapping) or not isinstance(data.get("task"), str):
            raise ImproperlyConfigured(f"not a signature: {data!r}")
        args = data.get("args") or ()
        kwargs = data.get("kwargs") or {}
        options = data.get("options") or {}
        if not isinstance(args, Sequence) or not isinstance(kwargs, Mapping):
            raise ImproperlyConfigured(f"signature {data['task']!r} has malformed args or kwargs")
        return cls(
            task=data["task"],
            args=tuple(args),
            kwargs=dict(kwargs),
            options=dict(options) if isinstance(options, Mapping) else {},
            immutable=bool(data.get("immutable", False)),
            subtask_type=data.get("subtask_type"),
            app=app,
        )

    def clone(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        """A copy with ``args`` prepended (unless immutable), kwargs and options merged."""
        new_args = self.args if self.immutable else tuple(args) + self.args
        new_kwargs = dict(self.kwargs) if self.immutable else {**self.kwargs, **(kwargs or {})}
        return replace(self, args=new_args, kwargs=new_kwargs, options={**self.options, **options})

    def set(self, **options: Any) -> Signature:
        """A copy with some options changed (queue, countdown, priority...)."""
        return replace(self, options={**self.options, **options})

    def bind(self, app: Celeriac) -> Signature:
        return replace(self, app=app)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        """Send the task; ``args`` are prepended to the signature's own (unless immutable)."""
        if self.app is None:
            raise ImproperlyConfigured(
                f"signature {self.task!r} is bound to no app: build it with task.s() or bind(app)"
            )
        sig = self.clone(args, kwargs, **options)
        return self.app.send_task(sig.task, sig.args, dict(sig.kwargs), **dict(sig.options))

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult[Any]:
        return self.apply_async(args, kwargs)

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.task}({', '.join(parts)}){'!' if self.immutable else ''}"


def signature(
    task: str | Signature | Mapping[str, Any],
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    immutable: bool = False,
    app: Celeriac | None = None,
) -> Signature:
    """Build a signature from a task name (or rebuild one from its dict)."""
    if isinstance(task, Signature | Mapping):
        return Signature.from_dict(task, app)
    return Signature(task, tuple(args), dict(kwargs or {}), dict(options or {}), immutable, app=app)
