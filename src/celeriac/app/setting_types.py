"""Checking one setting's value: by its declared type, then by the rule its meaning adds.

Kept apart from :mod:`celeriac.app.config` (which holds the settings and where they come from)
so that each stays small: this module knows nothing of where a value came from, only whether it
is acceptable, and converts it where that loses nothing (``timedelta`` to seconds, a tuple to a
list, ``"a,b"`` to ``["a", "b"]`` for a list of names).
"""

from __future__ import annotations

import logging
import types
import typing
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import orjson

from celeriac.errors import ImproperlyConfigured
from celeriac.routing.foreign import queues_setting

ENV_PREFIX = "CELERIAC_"

EXCHANGE_TYPES = ("direct", "topic", "fanout", "headers")
DELIVERY_MODES: dict[Any, int] = {1: 1, 2: 2, "transient": 1, "persistent": 2, "1": 1, "2": 2}


def type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("celeriac.routing.", "")


def _wrong(name: str, hint: Any, value: Any) -> ImproperlyConfigured:
    return ImproperlyConfigured(
        f"setting {name!r} must be {type_name(hint)}, not {type(value).__name__}: {value!r}"
    )


def check_type(name: str, hint: Any, value: Any) -> Any:
    """Return ``value`` converted to ``hint`` where the conversion is lossless, or raise."""
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        for option in typing.get_args(hint):
            if option is type(None):
                continue
            try:
                return check_type(name, option, value)
            except ImproperlyConfigured:
                continue
        raise _wrong(name, hint, value)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, timedelta):
            return value.total_seconds()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        if isinstance(value, list | tuple | set | frozenset):
            return [check_type(name, item, v) for v in value]
        if item is str and isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
    elif origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
    elif isinstance(hint, type) and isinstance(value, hint):
        return value
    raise _wrong(name, hint, value)


def parse_env_text(name: str, hint: Any, text: str) -> Any:
    """Parse an environment variable's text by the setting's type (JSON for lists and dicts)."""
    stripped = text.strip()
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if len(args) == 1 else hint
    variable = f"{ENV_PREFIX}{name.upper()}"
    if stripped.lower() in ("", "none", "null") and type(None) in typing.get_args(hint):
        return None
    if base is bool:
        lowered = stripped.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ImproperlyConfigured(f"{variable}: {text!r} is not a boolean")
    if base in (int, float):
        try:
            return base(stripped)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{variable}: {text!r} is not a {base.__name__}") from exc
    if (typing.get_origin(base) in (list, dict) or base is Any) and stripped[:1] in ("[", "{"):
        try:
            return orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            raise ImproperlyConfigured(f"{variable}: not valid JSON: {exc}") from exc
    return stripped


# -- rules beyond the type: each takes the typed value and returns it (possibly normalised) --------
def _at_least_one(name: str, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise ImproperlyConfigured(f"setting {name!r} must be >= 1, not {value}")
    return value


def _not_negative(name: str, value: float | None) -> float | None:
    if value is not None and value < 0:
        raise ImproperlyConfigured(f"setting {name!r} must be >= 0, not {value}")
    return value


def _between(low: int, high: int) -> Callable[[str, int | None], int | None]:
    def check(name: str, value: int | None) -> int | None:
        if value is not None and not low <= value <= high:
            raise ImproperlyConfigured(f"setting {name!r} must be {low}-{high}, not {value}")
        return value

    return check


def _exchange_type(name: str, value: str | None) -> str | None:
    if value is not None and value not in EXCHANGE_TYPES:
        raise ImproperlyConfigured(
            f"setting {name!r} must be one of {', '.join(EXCHANGE_TYPES)}, not {value!r}"
        )
    return value


def _delivery_mode(name: str, value: Any) -> int:
    key = value.lower() if isinstance(value, str) else value
    if key not in DELIVERY_MODES:
        raise ImproperlyConfigured(
            f"setting {name!r} must be 1, 2, 'transient' or 'persistent', not {value!r}"
        )
    return DELIVERY_MODES[key]


def _log_level(name: str, value: str) -> str:
    level = value.upper()
    if not isinstance(logging.getLevelName(level), int):
        raise ImproperlyConfigured(f"setting {name!r}: {value!r} is not a log level name")
    return level


def _time_zone(name: str, value: str) -> str:
    import zoneinfo  # only when a zone is set: most apps keep UTC

    if value.upper() == "UTC":
        return value
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ImproperlyConfigured(f"setting {name!r}: unknown time zone {value!r}") from exc
    return value


def _queues(name: str, value: Any) -> Any:
    """Celery's forms of ``task_queues``: celeriac's or kombu's queues (kombu's read by their
    attributes, so a Celery config module passes without importing kombu) in a list, tuple or
    set, or ``{name: queue-or-options}``; checked by routing, kept as given."""
    queues_setting(value, name)
    return value


def _annotations(name: str, value: Any) -> Any:
    """Celery's forms: a dict (task name or ``"*"`` to options), an object with ``annotate``,
    a dotted path to one, or a list of those."""
    items = value if isinstance(value, list | tuple) else [value]
    for item in items:
        if not (
            item is None
            or isinstance(item, Mapping | str)
            or callable(getattr(item, "annotate", 0))
        ):
            raise ImproperlyConfigured(
                f"setting {name!r} must be a dict, an object with annotate(), a dotted path "
                f"or a list of those, not {type(item).__name__}: {item!r}"
            )
    return value


def _names_to_entries(name: str, value: dict[str, Any]) -> dict[str, Any]:
    for key in value:
        if not isinstance(key, str):
            raise ImproperlyConfigured(f"setting {name!r}: entry names must be str, not {key!r}")
    return value


#: ``worker_pool_start_method``'s values and the method each means (``fork`` preloads the app
#: as Celery's does, from a fork server: see ``celeriac.worker.pools.starter``).
START_METHODS = {"forkserver": "forkserver", "fork": "forkserver", "spawn": "spawn"}


def check_start_method(name: str, value: str | None) -> str | None:
    """A ``worker_pool_start_method`` value as given; raises naming ``name`` if it is none of
    :data:`START_METHODS` (the setting's rule, and the prefork pool's own check)."""
    if value is not None and value not in START_METHODS:
        choices = ", ".join(repr(m) for m in START_METHODS)
        raise ImproperlyConfigured(f"setting {name!r}: {value!r} is not one of {choices}")
    return value


RULES: dict[str, Callable[[str, Any], Any]] = {
    "worker_concurrency": _at_least_one,
    "worker_prefetch_multiplier": _at_least_one,
    "worker_pool_start_method": check_start_method,
    "worker_fetch_stall_timeout": _not_negative,
    "task_default_priority": _between(0, 9),
    "task_queue_max_priority": _between(0, 255),
    "task_default_exchange_type": _exchange_type,
    "task_create_missing_queue_exchange_type": _exchange_type,
    "worker_redirect_stdouts_level": _log_level,
    "timezone": _time_zone,
    "task_queues": _queues,
    "task_annotations": _annotations,
    "beat_schedule": _names_to_entries,
}

#: Rules that read the value as given, before its type is checked (Celery's spellings of it).
BEFORE_TYPE: dict[str, Callable[[str, Any], Any]] = {
    "task_default_delivery_mode": _delivery_mode,
}
