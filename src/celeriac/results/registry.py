"""URL scheme to result backend class: built-ins imported lazily, third parties by entry point.

A package that ships a result backend declares, in its ``pyproject.toml``::

    [project.entry-points."celeriac.results"]
    mongodb = "celeriac_mongo:MongoBackend"

and ``Celeriac(backend="mongodb://...")`` finds it. Nothing is imported until its scheme is asked
for, so an app on SQLite never imports redis-py. Turning results off (``backend=None`` or
``"disabled"``) is the app's decision, made before it ever gets here.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from celeriac.errors import ImproperlyConfigured
from celeriac.results.base import Backend
from celeriac.transports.registry import load_class
from celeriac.utils.urls import redact_url, scheme_of

BUILTIN: dict[str, str] = {
    "memory": "celeriac.results.memory:MemoryBackend",
    "cache+memory": "celeriac.results.memory:MemoryBackend",
    "sqlite": "celeriac.results.sqlite:SQLiteBackend",
    "db+sqlite": "celeriac.results.sqlite:SQLiteBackend",
    "redis": "celeriac.results.redis:RedisBackend",
    "rediss": "celeriac.results.redis:RedisBackend",
    "rpc": "celeriac.results.rpc:RPCBackend",
}

ENTRY_POINT_GROUP = "celeriac.results"


def backend_class(url: str) -> type[Backend]:
    """The backend class that serves ``url``'s scheme; built-ins win over entry points."""
    scheme = scheme_of(url)
    path = BUILTIN.get(scheme)
    if path is None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == scheme:
                path = ep.value
                break
    if path is None:
        known = sorted(set(BUILTIN) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
        raise ImproperlyConfigured(
            f"result_backend {redact_url(url)!r}: unknown scheme {scheme!r}; "
            f"known: {', '.join(known)}"
        )
    cls = load_class(path, f"result_backend scheme {scheme!r}")
    if not issubclass(cls, Backend):
        raise ImproperlyConfigured(f"{path!r} is not a celeriac result Backend")
    return cls


def create_backend(url: str, **kwargs: Any) -> Backend:
    """A backend instance for ``url``; ``kwargs`` go to its constructor (serializer, ...)."""
    return backend_class(url)(url, **kwargs)
