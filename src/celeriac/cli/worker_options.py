"""The worker command's option types: memory sizes in Celery's unit, pools by Celery's names.

Apart from :mod:`celeriac.cli.worker` so that the command reads as its list of options.
"""

from __future__ import annotations

import math

import click

from celeriac.worker.pools import POOLS

#: Multiples of a KiB; a bare number is KiB, as Celery's ``--max-memory-per-child``.
_KIB_UNITS = {
    "": 1.0,
    "K": 1.0,
    "KB": 1.0,
    "KIB": 1.0,
    "M": 1024.0,
    "MB": 1024.0,
    "MIB": 1024.0,
    "G": 1024.0**2,
    "GB": 1024.0**2,
    "GIB": 1024.0**2,
    "B": 1 / 1024,
}
#: Pools other task queues have that celeriac replaces, and with what.
REPLACED_POOLS = {
    "gevent": "-P asyncio for async def tasks, or -P threads for I/O-bound sync tasks",
    "eventlet": "-P asyncio for async def tasks, or -P threads for I/O-bound sync tasks",
    "custom": "-P module:Class of a celeriac Pool subclass",
}
#: Celery's other names for a pool.
POOL_ALIASES = {"processes": "prefork"}


class KiBSize(click.ParamType[int]):
    """A memory size in KiB: ``200000`` (KiB, as Celery reads it), ``300MB``, ``1.5GB``."""

    name = "size"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().replace(" ", "")
        number = text.rstrip("KMGIB")
        unit = text[len(number) :]
        try:
            kib = math.ceil(float(number) * _KIB_UNITS[unit])
        except (ValueError, KeyError, OverflowError):
            self.fail(f"{value!r} is not a size such as 300MB, 1GB or 200000 (KiB)", param, ctx)
        if kib <= 0:
            self.fail(f"{value!r} must be positive", param, ctx)
        return kib


class PoolName(click.ParamType[str]):
    """``-P``: a celeriac pool, Celery's ``processes`` for prefork, or ``module:Class``; gevent
    and eventlet are refused naming what replaces them."""

    name = "pool"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return f"[{'|'.join(sorted(POOLS))}]"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        name = str(value).strip()
        name = POOL_ALIASES.get(name.lower(), name)
        if name in POOLS or ":" in name:
            return name
        replacement = REPLACED_POOLS.get(name.lower())
        if replacement is not None:
            self.fail(f"celeriac has no {name} pool: use {replacement}", param, ctx)
        return self.fail(
            f"{name!r} is not a pool: choose from {', '.join(sorted(POOLS))}", param, ctx
        )
