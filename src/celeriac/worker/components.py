"""Worker components (Celery's "bootsteps"): pieces with a start and a stop, in dependency order.

The worker is a list of components: timer, connection, pool, consumer, heartbeat, control,
events, autoscaler, reloader, and whatever the app adds with ``app.add_component(cls)``. They
start in dependency order (``requires`` names other components) and stop in the reverse order,
on warm and cold shutdown alike, so a user component that opens something in ``start`` can rely
on ``stop`` to close it.

>>> class Metrics(Component):
...     name = "metrics"
...     requires = ("consumer",)
...     async def start(self, worker): self.server = start_server(worker.state)
...     async def stop(self, worker): self.server.close()
>>> app.add_component(Metrics)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from celeriac.app.components import Component
from celeriac.errors import ImproperlyConfigured

__all__ = ["Component", "in_dependency_order"]


def in_dependency_order(components: Iterable[Component]) -> list[Component]:
    """Order components so each comes after what it requires; keeps the given order otherwise.

    An unknown requirement or a cycle fails naming the components involved.
    """
    items = list(components)
    by_name: dict[str, Component] = {}
    for component in items:
        if not component.name:
            raise ImproperlyConfigured(f"component {type(component).__name__} has no name")
        if component.name in by_name:
            raise ImproperlyConfigured(f"two components are named {component.name!r}")
        by_name[component.name] = component
    ordered: list[Component] = []
    state: dict[str, str] = {}

    def visit(component: Component, path: Sequence[str]) -> None:
        mark = state.get(component.name)
        if mark == "done":
            return
        if mark == "visiting":
            cycle = " -> ".join([*path, component.name])
            raise ImproperlyConfigured(f"worker components require each other: {cycle}")
        state[component.name] = "visiting"
        for required in component.requires:
            dependency = by_name.get(required)
            if dependency is None:
                raise ImproperlyConfigured(
                    f"component {component.name!r} requires {required!r}, which this worker "
                    f"does not run (it has: {', '.join(by_name)})"
                )
            visit(dependency, [*path, component.name])
        state[component.name] = "done"
        ordered.append(component)

    for component in items:
        visit(component, [])
    return ordered
