"""Execution pools, chosen with ``-P``. See :mod:`celeriac.worker.pools.base`.

Pools are imported when chosen, so a worker on threads never imports multiprocessing machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from celeriac.errors import ImproperlyConfigured
from celeriac.utils.plugins import load_class

if TYPE_CHECKING:
    from celeriac.worker.pools.base import Pool

POOLS: dict[str, str] = {
    "prefork": "celeriac.worker.pools.prefork:PreforkPool",
    "threads": "celeriac.worker.pools.threads:ThreadPool",
    "solo": "celeriac.worker.pools.threads:SoloPool",
    "asyncio": "celeriac.worker.pools.asyncio:AsyncioPool",
}


def pool_class(name: str) -> type[Pool]:
    """The pool class for ``-P name``, or a ``module:Class`` path to a custom pool."""
    path = POOLS.get(name) or (name if ":" in name else None)
    if path is None:
        raise ImproperlyConfigured(
            f"unknown pool {name!r}; choose one of: {', '.join(sorted(POOLS))} "
            "(or give module:Class of a custom pool)"
        )
    from celeriac.worker.pools.base import Pool  # here: the CLI reads POOLS without it

    cls = load_class(path, f"pool {name!r}")
    if not issubclass(cls, Pool):
        raise ImproperlyConfigured(f"{path!r} is not a celeriac Pool")
    return cls
