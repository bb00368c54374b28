"""Rates as Celery writes them (``"10/s"``, ``"100/m"``, ``"1000/h"``, ``5``), in tokens per second.

Parsed where a rate is declared (a task option, ``task_default_rate_limit``, a remote
``rate_limit`` command), so that a bad one fails there naming itself, and by the worker's limiter.
"""

from __future__ import annotations

import math
import re

from celeriac.errors import ImproperlyConfigured

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
}
_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*([a-zA-Z]+))?\s*$")


def parse_rate(value: str | float | None) -> float | None:
    """Tokens per second for ``"10/s"``, ``"100/m"``, ``"1000/h"`` or ``"5"`` (per second).

    ``None`` and a zero rate mean no limit (Celery's meaning of ``"0"``). Anything else fails
    with :class:`~celeriac.errors.ImproperlyConfigured` naming the value.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ImproperlyConfigured(f"bad rate limit {value!r}: expected e.g. '10/s', '100/m'")
    if isinstance(value, int | float):
        number, unit = float(value), 1.0
    else:
        match = _RATE.match(value) if isinstance(value, str) else None
        if match is None or (match.group(2) and match.group(2).lower() not in _UNITS):
            raise ImproperlyConfigured(
                f"bad rate limit {value!r}: expected N, N/s, N/m or N/h (e.g. '10/s', '100/m')"
            )
        number = float(match.group(1))
        unit = _UNITS[match.group(2).lower()] if match.group(2) else 1.0
    if not math.isfinite(number) or number < 0:
        raise ImproperlyConfigured(f"bad rate limit {value!r}: must be a finite number >= 0")
    return number / unit if number > 0 else None
