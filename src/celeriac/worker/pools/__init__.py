"""Execution pools, chosen with ``-P``. See :mod:`celeriac.worker.pools.base`."""

from __future__ import annotations

from celeriac.errors import ImproperlyConfigured
from celeriac.worker.pools.base import Pool
from celeriac.worker.pools.threads import SoloPool, ThreadPool

POOLS: dict[str, type[Pool]] = {"threads": ThreadPool, "solo": SoloPool}


def pool_class(name: str) -> type[Pool]:
    try:
        return POOLS[name]
    except KeyError:
        raise ImproperlyConfigured(
            f"unknown pool {name!r}; choose one of: {', '.join(sorted(POOLS))}"
        ) from None
