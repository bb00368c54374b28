"""The builtin tasks workflows rely on, registered on every app so every worker knows them.

``celery.map`` and ``celery.starmap`` run another task's function over a list inside one task
(``xmap``, ``xstarmap`` and each message of ``chunks``); their names are Celery's, so a Celery
client's map messages run here too. ``celeriac.identity`` hands a group's list of results on as
one value when a group must produce a single result (a chord header member that ends in a group).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from celeriac.canvas.signature import Signature
from celeriac.utils.loops import thread_loop

if TYPE_CHECKING:
    from celeriac.app import Celeriac


def _run(app: Celeriac, task: Mapping[str, Any], args: tuple[Any, ...]) -> Any:
    """Call the task's function here, as a plain call (no message, no result of its own)."""
    sig = Signature.from_dict(task, app)
    target = app.get_task(sig.task)
    value = target(*args, *sig.args, **sig.kwargs)
    if target.is_async:
        return thread_loop().run_until_complete(value)
    return value


def register_builtins(app: Celeriac) -> None:
    """Declare the builtin tasks on ``app``."""

    @app.task(name="celery.map", typing=False)
    def xmap(task: Mapping[str, Any], it: Iterable[Any]) -> list[Any]:
        return [_run(app, task, (item,)) for item in it]

    @app.task(name="celery.starmap", typing=False)
    def xstarmap(task: Mapping[str, Any], it: Iterable[Any]) -> list[Any]:
        return [_run(app, task, tuple(item)) for item in it]

    @app.task(name="celeriac.identity", typing=False)
    def identity(value: Any) -> Any:
        return value
