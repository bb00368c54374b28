"""A router function of Celery's "Routing Tasks" guide ("Routers"), installed by the tests with
``task_routes = (route_task,)`` or by name, ``('proj.routers.route_task',)``."""

from typing import Any


def route_task(
    name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any
) -> dict[str, Any] | None:
    if name == "proj.tasks.where":
        return {"exchange": "media", "exchange_type": "direct", "routing_key": "media.video"}
    return None
