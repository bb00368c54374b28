"""URL scheme to result backend class: built-ins imported lazily, third parties by entry point.

A package that ships a result backend declares, in its ``pyproject.toml``::

    [project.entry-points."celeriac.results"]
    mongodb = "celeriac_mongo:MongoBackend"

and ``Celeriac(backend="mongodb://...")`` finds it. Nothing is imported until its scheme is asked
for, so an app on SQLite never imports redis-py. Turning results off (``backend=None`` or
``"disabled"``) is the app's decision, made before it ever gets here.
"""

from __future__ import annotations

from typing import Any

from celeriac.results.base import Backend
from celeriac.utils.plugins import class_for_url

BUILTIN: dict[str, str] = {
    "memory": "celeriac.results.memory:MemoryBackend",
    "cache+memory": "celeriac.results.memory:MemoryBackend",
    "sqlite": "celeriac.results.sqlite:SQLiteBackend",
    "db+sqlite": "celeriac.results.sqlite:SQLiteBackend",
    "redis": "celeriac.results.redis:RedisBackend",
    "rediss": "celeriac.results.redis:RedisBackend",
    "unix": "celeriac.results.redis:RedisBackend",
    "redis+sentinel": "celeriac.results.redis:RedisBackend",
    "sentinel": "celeriac.results.redis:RedisBackend",  # Celery's spelling of redis+sentinel
    "rpc": "celeriac.results.rpc:RPCBackend",
    # the Django integration's (celeriac[django]): loaded by name, so results never imports it
    "django-db": "celeriac.contrib.django.results.backend:DjangoBackend",
}

ENTRY_POINT_GROUP = "celeriac.results"


def backend_class(url: str) -> type[Backend]:
    """The backend class that serves ``url``'s scheme; built-ins win over entry points."""
    cls: type[Backend] = class_for_url(url, BUILTIN, ENTRY_POINT_GROUP, "result_backend", Backend)
    return cls


def create_backend(url: str, **kwargs: Any) -> Backend:
    """A backend instance for ``url``; ``kwargs`` go to its constructor (serializer, ...)."""
    return backend_class(url)(url, **kwargs)
