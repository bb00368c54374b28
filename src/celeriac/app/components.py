"""The base class of worker components (Celery's "bootsteps") that an app declares.

``app.add_component(cls)`` records a component on the app, where every worker of the app finds
it, and makes its ``task_options`` valid for ``@app.task`` at once: so the class that users subclass
belongs to the app, while the worker (:mod:`celeriac.worker.components`) orders and runs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from celeriac.worker.worker import Worker


class Component:
    """A part of the worker. Subclass it; one instance is made per worker."""

    #: Unique name; others list it in their ``requires``.
    name: ClassVar[str] = ""
    #: Components that must start before this one (and stop after it).
    requires: ClassVar[tuple[str, ...]] = ()
    #: Task options this component understands (name -> default); declaring them here makes
    #: ``@app.task(option=...)`` valid once the component is added to the app.
    task_options: ClassVar[Mapping[str, Any]] = {}

    def enabled(self, worker: Worker) -> bool:
        """Whether this worker runs this component (e.g. the autoscaler only with --autoscale)."""
        return True

    async def start(self, worker: Worker) -> None:
        """Start; a failure here stops the worker before it consumes anything."""

    async def stop(self, worker: Worker) -> None:
        """Stop and release what ``start`` took. ``worker.cold`` tells a cold shutdown."""

    def __repr__(self) -> str:
        return f"<component {self.name}>"
