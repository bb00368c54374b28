"""Typed settings with Celery's names, and the three ways to set them.

Sources, later ones winning: the defaults below, ``app.config_from_object(...)`` and keyword
arguments (in the order they are given), then environment variables ``CELERIAC_<SETTING>``
(``CELERIAC_BROKER_URL``, ``CELERIAC_WORKER_CONCURRENCY``...), so that a deployment can override
what the code says without editing it.

Every value is checked against its declared type when it is set, so a typo or a wrong type fails
at start-up with the setting's name (and, for a typo, the setting that was probably meant)
instead of being silently ignored the way Celery ignores unknown keys.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import types
import typing
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

import orjson

from celeriac.errors import ImproperlyConfigured
from celeriac.routing import Queue

logger = logging.getLogger(__name__)

ENV_PREFIX = "CELERIAC_"
DEFAULT_DB = "celeriac.db"


@dataclasses.dataclass(slots=True)
class Settings:
    """Every setting celeriac reads. Names and meanings follow Celery's where Celery has one."""

    # broker and results
    broker_url: str | None = None
    broker_transport_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    broker_connection_timeout: float = 4.0
    broker_connection_retry_on_startup: bool = True
    broker_connection_max_retries: int | None = 3
    result_backend: str | None = None
    result_backend_transport_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    result_serializer: str = "json"
    result_accept_content: list[str] | None = None
    result_expires: float | None = 86400.0
    result_extended: bool = False

    # messages
    task_serializer: str = "json"
    accept_content: list[str] = dataclasses.field(default_factory=lambda: ["json"])
    task_compression: str | None = None

    # routing
    task_queues: list[Queue] | None = None
    task_routes: Any = None
    task_default_queue: str = "celery"
    task_default_exchange: str = ""
    task_default_routing_key: str | None = None
    task_default_priority: int | None = None
    task_create_missing_queues: bool = True

    # task behaviour
    task_acks_late: bool = False
    task_reject_on_worker_lost: bool = False
    task_acks_on_failure_or_timeout: bool = True
    task_always_eager: bool = False
    task_eager_propagates: bool = False
    task_store_eager_result: bool = False
    task_ignore_result: bool = False
    task_store_errors_even_if_ignored: bool = False
    task_track_started: bool = False
    task_time_limit: float | None = None
    task_soft_time_limit: float | None = None
    task_default_rate_limit: str | None = None
    task_default_retry_delay: float = 180.0
    task_max_retries: int | None = 3
    task_publish_retry: bool = True
    task_publish_retry_policy: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {
            "max_retries": 3,
            "interval_start": 0.0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        }
    )

    # worker
    worker_concurrency: int | None = None
    worker_prefetch_multiplier: int = 4
    worker_pool: str = "prefork"
    worker_shutdown_timeout: float | None = None
    worker_max_tasks_per_child: int | None = None
    worker_max_memory_per_child: int | None = None
    worker_lease_renewal_interval: float | None = None
    worker_autoscaler: str | None = None

    # time
    timezone: str = "UTC"
    enable_utc: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


SETTING_NAMES: frozenset[str] = frozenset(f.name for f in dataclasses.fields(Settings))
_HINTS: dict[str, Any] = typing.get_type_hints(Settings)

# Celery's old upper-case names that users still carry in their config modules.
ALIASES: dict[str, str] = {
    "broker": "broker_url",
    "backend": "result_backend",
    "celery_result_backend": "result_backend",
    "broker_transport_options": "broker_transport_options",
}


def _suggest(name: str) -> str:
    import difflib  # only for a name that is not a setting: a mistake, or someone else's variable

    close = difflib.get_close_matches(name, SETTING_NAMES, n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_setting(name: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"unknown setting {name!r}{_suggest(name)}")


def _type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("celeriac.routing.", "")


def _check(name: str, hint: Any, value: Any) -> Any:
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
                return _check(name, option, value)
            except ImproperlyConfigured:
                continue
        raise ImproperlyConfigured(
            f"setting {name!r} must be {_type_name(hint)}, not {type(value).__name__}: {value!r}"
        )
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
            return [_check(name, item, v) for v in value]
        if item is str and isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
    elif origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
    elif isinstance(hint, type) and isinstance(value, hint):
        return value
    raise ImproperlyConfigured(
        f"setting {name!r} must be {_type_name(hint)}, not {type(value).__name__}: {value!r}"
    )


def _from_env_text(name: str, hint: Any, text: str) -> Any:
    """Parse an environment variable's text by the setting's type (JSON for lists and dicts)."""
    stripped = text.strip()
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if len(args) == 1 else hint
    if stripped.lower() in ("", "none", "null") and type(None) in typing.get_args(hint):
        return None
    if base is bool:
        lowered = stripped.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ImproperlyConfigured(f"{ENV_PREFIX}{name.upper()}: {text!r} is not a boolean")
    if base in (int, float):
        try:
            return base(stripped)
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"{ENV_PREFIX}{name.upper()}: {text!r} is not a {base.__name__}"
            ) from exc
    if (typing.get_origin(base) in (list, dict) or base is Any) and stripped[:1] in ("[", "{"):
        try:
            return orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            raise ImproperlyConfigured(
                f"{ENV_PREFIX}{name.upper()}: not valid JSON: {exc}"
            ) from exc
    return stripped


def validate(name: str, value: Any) -> Any:
    """Check one setting; returns the value as stored (timedelta to seconds, tuple to list)."""
    name = ALIASES.get(name, name)
    if name not in SETTING_NAMES:
        raise unknown_setting(name)
    value = _check(name, _HINTS[name], value)
    if name == "worker_concurrency" and value is not None and value < 1:
        raise ImproperlyConfigured(f"setting 'worker_concurrency' must be >= 1, not {value}")
    if name == "worker_prefetch_multiplier" and value < 1:
        raise ImproperlyConfigured(
            f"setting 'worker_prefetch_multiplier' must be >= 1, not {value}"
        )
    if name == "task_default_priority" and value is not None and not 0 <= value <= 9:
        raise ImproperlyConfigured(f"setting 'task_default_priority' must be 0-9, not {value}")
    return value


def apply(settings: Settings, values: Mapping[str, Any]) -> None:
    """Validate every value first, then set them all: a bad one leaves ``settings`` untouched."""
    checked = {ALIASES.get(k, k): validate(k, v) for k, v in values.items()}
    for key, value in checked.items():
        setattr(settings, key, value)


def from_environ(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings given as ``CELERIAC_<SETTING>`` variables, parsed by type."""
    env = os.environ if environ is None else environ
    found: dict[str, Any] = {}
    for key, text in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name in SETTING_NAMES:
            found[name] = validate(name, _from_env_text(name, _HINTS[name], text))
        elif _suggest(name):
            logger.warning("environment variable %s is not a setting%s", key, _suggest(name))
    return found


def from_object(obj: Any, namespace: str | None = None) -> dict[str, Any]:
    """The settings an object or module holds (``"pkg.module"`` or ``"pkg.module:attr"`` too).

    Without a namespace, every public lower-case attribute that is not a module, class or
    function must be a known setting. With ``namespace="CELERY"`` (Django style) only attributes
    ``CELERY_<SETTING>`` are read, and each of those must be known.
    """
    if isinstance(obj, str):
        obj = _import_object(obj)
    items: Iterable[tuple[str, Any]] = (
        obj.items() if isinstance(obj, Mapping) else ((k, getattr(obj, k)) for k in dir(obj))
    )
    found: dict[str, Any] = {}
    prefix = f"{namespace}_" if namespace else None
    for key, value in items:
        if prefix is not None:
            if not key.startswith(prefix):
                continue
            key = key[len(prefix) :].lower()
        elif key.startswith("_") or key != key.lower():
            continue
        if isinstance(value, types.ModuleType | type | types.FunctionType):
            continue
        found[key] = validate(key, value)
    return found


def _import_object(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImproperlyConfigured(f"cannot import config module {module_name!r}: {exc}") from exc
    if not attr:
        return module
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ImproperlyConfigured(f"config module {module_name!r} has no {attr!r}") from exc


def default_db_url(path: str = DEFAULT_DB) -> str:
    """The embedded default: a SQLite file in the current directory, for broker and results."""
    return f"sqlite:///{path}"
