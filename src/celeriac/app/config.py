"""Typed settings with Celery's names, the ways to set them, and ``app.conf`` as a mapping.

Sources, later ones winning: the defaults below, ``app.config_from_object(...)`` and keyword
arguments (in the order they are given), then environment variables ``CELERIAC_<SETTING>``
(``CELERIAC_BROKER_URL``, ``CELERIAC_WORKER_CONCURRENCY``...), so that a deployment can override
what the code says without editing it. Celery's own ``CELERY_BROKER_URL`` and
``CELERY_RESULT_BACKEND`` variables are read too (a ``CELERIAC_`` one wins over them).

Every one of Celery's setting names is accepted, and its pre-4.0 upper-case name too
(``CELERY_ALWAYS_EAGER``); :mod:`celeriac.app.celery_settings` says which are in effect, which
are not yet, and which have no effect here and why (:func:`startup_notes` turns the ones a user
set into lines for the worker's log). Every value is checked against its declared type when it
is set, so a typo or a wrong type fails at start-up with the setting's name (and, for a typo,
the setting that was probably meant) instead of being silently ignored the way Celery ignores
unknown keys.
"""

import __future__

import dataclasses
import importlib
import logging
import os
import types
from collections.abc import Iterable, Mapping
from typing import Any

from celeriac.app.celery_settings import NO_EFFECT_DEFAULTS, OLD_NAMES, TABLE, Kind
from celeriac.app.conf_mapping import SettingsMapping, add_name_properties
from celeriac.app.setting_types import (
    BEFORE_TYPE,
    ENV_PREFIX,
    RULES,
    check_type,
    parse_env_text,
)
from celeriac.errors import ImproperlyConfigured
from celeriac.utils.logs import LOG_FORMAT

logger = logging.getLogger(__name__)

__all__ = [
    "ENV_PREFIX",
    "Settings",
    "apply",
    "canonical_name",
    "from_environ",
    "from_object",
    "startup_notes",
    "validate",
]

DEFAULT_DB = "celeriac.db"
TASK_LOG_FORMAT = (
    "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s"
)


@dataclasses.dataclass(slots=True, init=False, repr=False, eq=False)
class Settings(SettingsMapping):
    """Every typed setting. Names and meanings follow Celery's where Celery has one.

    Reads are plain slot reads (the send path reads several per message). Writes by users
    (``conf.x = v``, ``conf["x"] = v``, ``conf.update(...)``) are validated: see
    :class:`~celeriac.app.conf_mapping.SettingsMapping` for the mapping side.
    """

    # broker
    broker_url: str | None = None
    broker_transport_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    broker_connection_timeout: float = 4.0
    broker_connection_retry: bool = True
    broker_connection_retry_on_startup: bool = True
    broker_connection_max_retries: int | None = 3  # Celery: 100 (with waits up to 5 s each)
    broker_heartbeat: float | None = None  # None: the transport's own (60 s on RabbitMQ)

    # results
    result_backend: str | None = None
    result_backend_transport_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    result_serializer: str = "json"
    result_accept_content: list[str] | None = None
    result_expires: float | None = 86400.0
    #: The largest encoded result a backend stores; a larger one is stored as a FAILURE
    #: (ResultTooLarge) saying so. None: no limit.
    result_max_bytes: int | None = 64 * 1024 * 1024
    result_extended: bool = False
    result_compression: str | None = None
    result_chord_join_timeout: float = 3.0

    # messages
    task_serializer: str = "json"
    accept_content: list[str] = dataclasses.field(default_factory=lambda: ["json"])
    task_compression: str | None = None

    # routing
    task_queues: Any = None  # celeriac's or kombu's queues, or Celery's dict form (routing reads)
    task_routes: Any = None
    task_default_queue: str = "celery"
    task_default_exchange: str = ""  # the AMQP default exchange (Celery: the queue's name)
    task_default_exchange_type: str = "direct"
    task_default_routing_key: str | None = None
    task_default_priority: int | None = None
    task_default_delivery_mode: int = 2  # "persistent"; "transient" reads as 1
    task_create_missing_queues: bool = True
    task_create_missing_queue_exchange_type: str | None = None
    task_queue_max_priority: int | None = None
    task_inherit_parent_priority: bool = False

    # task behaviour
    task_acks_late: bool = False
    task_reject_on_worker_lost: bool = False
    task_acks_on_failure_or_timeout: bool = True
    task_acks_on_failure: bool | None = None  # None: as task_acks_on_failure_or_timeout
    task_acks_on_timeout: bool | None = None  # None: as task_acks_on_failure_or_timeout
    task_always_eager: bool = False
    task_eager_propagates: bool = False
    task_store_eager_result: bool = False
    task_ignore_result: bool = False
    task_store_errors_even_if_ignored: bool = False
    task_track_started: bool = False
    task_time_limit: float | None = None
    task_soft_time_limit: float | None = None
    task_default_rate_limit: str | None = None
    task_default_retry_delay: float = 180.0  # celeriac's own (Celery: the task attribute only)
    task_max_retries: int | None = 3  # celeriac's own (Celery: the task attribute only)
    task_publish_retry: bool = True
    task_publish_retry_policy: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {
            "max_retries": 3,
            "interval_start": 0.0,
            "interval_step": 0.2,
            "interval_max": 0.2,  # Celery: 1
        }
    )
    task_annotations: Any = None
    task_remote_tracebacks: bool = False
    task_send_sent_event: bool = False

    # worker
    worker_concurrency: int | None = None
    worker_prefetch_multiplier: int = 4  # >= 1: Celery's 0 (no limit) is refused
    worker_pool: str = "prefork"
    # None: 'forkserver' on Linux, 'spawn' elsewhere ('fork' is read as 'forkserver')
    worker_pool_start_method: str | None = None
    # celeriac's own: prefork children claim their own messages where the broker allows it
    # (Redis): see celeriac.worker.pools.fetching
    worker_prefork_fetch: bool = True
    worker_shutdown_timeout: float | None = None  # celeriac's own
    worker_max_tasks_per_child: int | None = None
    worker_max_memory_per_child: int | None = None  # KiB, as in Celery
    worker_lease_renewal_interval: float | None = None  # celeriac's own
    # celeriac's own: seconds a worker may fetch nothing while its queues hold ready messages
    # before its watchdog warns and restarts its fetch (None: 10 s; 0: no watchdog)
    worker_fetch_stall_timeout: float | None = None
    worker_autoscaler: str | None = None  # None: celeriac's own (Celery names its class here)
    worker_disable_rate_limits: bool = False
    worker_direct: bool = False
    worker_enable_remote_control: bool = True
    worker_cancel_long_running_tasks_on_connection_loss: bool = False
    worker_send_task_events: bool = False
    worker_state_db: str | None = None
    worker_revoke_expires: float = 10_800.0  # celeriac's own (Celery: an environment variable)
    imports: list[str] = dataclasses.field(default_factory=list)
    include: list[str] = dataclasses.field(default_factory=list)

    # worker logging
    worker_hijack_root_logger: bool = True
    worker_log_format: str = LOG_FORMAT
    worker_task_log_format: str = TASK_LOG_FORMAT
    worker_log_datefmt: str | None = None
    worker_task_log_datefmt: str | None = None
    worker_redirect_stdouts: bool = True
    worker_redirect_stdouts_level: str = "WARNING"

    # events
    event_queue_expires: float = 60.0
    event_queue_ttl: float = 5.0
    event_queue_prefix: str = "celeryev"
    event_queue_exclusive: bool = True
    event_queue_durable: bool = False
    event_serializer: str = "json"
    event_exchange: str = "celeryev"

    # remote control
    control_queue_ttl: float = 300.0
    control_queue_expires: float = 10.0
    control_queue_exclusive: bool = True
    control_queue_durable: bool = False
    control_exchange: str = "celery"

    # beat: entries are kept as given here and checked by beat itself
    beat_schedule: dict[str, Any] = dataclasses.field(default_factory=dict)
    beat_scheduler: str | None = None  # None: celeriac's own (Celery names its class here)
    beat_schedule_filename: str = "celerybeat-schedule"
    beat_sync_every: int = 0
    beat_max_loop_interval: float = 0.0
    beat_enable_remote_control: bool = False
    beat_remote_control_max_tick_age: float | None = None
    beat_cron_starting_deadline: int | None = None

    # message signing
    # message signing (the auth bundle; celeriac.app.security): the private key that signs what
    # this process sends, the public keys trusted to sign what it runs
    security_key: str | None = None
    security_key_password: bytes | str | None = None
    security_certificate: str | None = None
    security_cert_store: str | list[str] | None = None

    # time
    timezone: str = "UTC"  # Celery: None, meaning UTC
    enable_utc: bool = True

    def __init__(self) -> None:
        init = object.__setattr__
        for name, make in _MAKERS:
            init(self, name, make())
        init(self, "listener", None)
        init(self, "_kept", {})

    # -- the hooks SettingsMapping builds on -------------------------------------------------------
    def _validated(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {canonical_name(key): validate(key, value) for key, value in values.items()}

    def _lookup(self, name: str) -> str | None:
        return _lookup(name)

    def _defaults(self) -> Mapping[str, Any]:
        return _DEFAULTS

    def _fresh(self) -> "Settings":
        return Settings()

    @staticmethod
    def _suggest(name: str) -> str:
        return _suggest(name)


_FIELDS: tuple[dataclasses.Field[Any], ...] = dataclasses.fields(Settings)
SETTING_NAMES: frozenset[str] = frozenset(f.name for f in _FIELDS)
#: The declared types. This module does not postpone annotations (no ``from __future__ import
#: annotations``), so the fields' types are objects already: resolving a hundred annotation
#: strings with ``typing.get_type_hints`` cost 0.8 ms of every process's import.
_HINTS: dict[str, Any] = {f.name: f.type for f in _FIELDS}
_MAKERS: list[tuple[str, Any]] = [
    (f.name, f.default_factory if f.default is dataclasses.MISSING else (lambda v=f.default: v))
    for f in _FIELDS
]
#: Every current name: the typed fields first, then the ones kept without effect.
ALL_NAMES: tuple[str, ...] = (*(f.name for f in _FIELDS), *NO_EFFECT_DEFAULTS)
_DEFAULTS: dict[str, Any] = {
    **{name: make() for name, make in _MAKERS},
    **NO_EFFECT_DEFAULTS,
}

#: Names Celery accepts besides its setting names: ``Celery(broker=..., backend=...)``'s
#: arguments, and the one lower-case old name its docs long showed.
ALIASES: dict[str, str] = {
    "broker": "broker_url",
    "backend": "result_backend",
    "celery_result_backend": "result_backend",
}

add_name_properties(
    Settings,
    {**OLD_NAMES, **{name: name for name in NO_EFFECT_DEFAULTS}},
)

#: Celery reads these environment variables itself, so deployments set them.
CELERY_ENVIRON: dict[str, str] = {
    "CELERY_BROKER_URL": "broker_url",
    "CELERY_RESULT_BACKEND": "result_backend",
    "CELERY_BROKER_READ_URL": "broker_read_url",
    "CELERY_BROKER_WRITE_URL": "broker_write_url",
}


def _lookup(name: str) -> str | None:
    """The current name ``name`` stands for (itself, or the one an old name maps to), or None."""
    if name in _DEFAULTS:
        return name
    return OLD_NAMES.get(name) or ALIASES.get(name)


def _suggest(name: str) -> str:
    import difflib  # only for a name that is not a setting: a mistake, or someone else's variable

    close = difflib.get_close_matches(name, OLD_NAMES, n=1, cutoff=0.75) if name.isupper() else []
    close = close or difflib.get_close_matches(name.lower(), ALL_NAMES, n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_setting(name: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"unknown setting {name!r}{_suggest(name)}")


def canonical_name(name: str) -> str:
    """The current name of a setting given by any name Celery accepts; raises if none."""
    found = _lookup(name)
    if found is None:
        raise unknown_setting(name)
    return found


def validate(name: str, value: Any) -> Any:
    """Check one setting; returns the value as stored (timedelta to seconds, tuple to list).

    A setting that has no effect in celeriac is kept as given: no value of it is wrong here.
    """
    name = canonical_name(name)
    if name in NO_EFFECT_DEFAULTS:
        return value
    before = BEFORE_TYPE.get(name)
    if before is not None:
        value = before(name, value)
    value = check_type(name, _HINTS[name], value)
    rule = RULES.get(name)
    return value if rule is None else rule(name, value)


def apply(settings: Settings, values: Mapping[str, Any]) -> None:
    """Validate every value first, then set them all: a bad one leaves ``settings`` untouched."""
    settings.assign({canonical_name(k): validate(k, v) for k, v in values.items()})


def startup_notes(settings: Settings) -> list[str]:
    """One line per setting the user set that does nothing here, saying why (for the worker's
    start-up log). A setting counts as set when its value is not the default."""
    notes = []
    for name in settings.changed():
        entry = TABLE.get(name)
        if entry is None or entry.kind is Kind.IN_EFFECT:
            continue
        verb = "has no effect" if entry.kind is Kind.NO_EFFECT else "is not in effect yet"
        notes.append(f"setting {name!r} {verb}: {entry.why}")
    return notes


def from_environ(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings given as ``CELERIAC_<SETTING>`` variables, parsed by type (and Celery's
    ``CELERY_BROKER_URL`` and ``CELERY_RESULT_BACKEND``, which a ``CELERIAC_`` one overrides)."""
    env = os.environ if environ is None else environ
    found: dict[str, Any] = {}
    for variable, name in CELERY_ENVIRON.items():
        text = env.get(variable)
        if text:
            found[name] = validate(name, text.strip())
    for key, text in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name in BEFORE_TYPE:  # a rule that reads Celery's spellings reads the text itself
            found[name] = validate(name, text.strip())
        elif name in SETTING_NAMES:
            found[name] = validate(name, parse_env_text(name, _HINTS[name], text))
        elif name in NO_EFFECT_DEFAULTS:
            found[name] = parse_env_text(name, _kept_hint(NO_EFFECT_DEFAULTS[name]), text)
        elif _suggest(name):
            logger.warning("environment variable %s is not a setting%s", key, _suggest(name))
    return found


def _kept_hint(default: Any) -> Any:
    """How to read an environment variable for a setting without effect: by Celery's default."""
    if isinstance(default, bool | int | float):
        return type(default)
    if isinstance(default, dict):
        return dict[str, Any]
    return str | None


#: The first words of setting names: a lower-case name in a config module that starts with one of
#: these is meant as a setting (a typo of one fails); any other name is the module's own helper.
_SETTING_WORDS = frozenset(name.split("_", 1)[0] for name in _DEFAULTS)


def _looks_like_a_setting(name: str) -> bool:
    return name in _DEFAULTS or name.split("_", 1)[0] in _SETTING_WORDS or bool(_suggest(name))


def from_object(obj: Any, namespace: str | None = None) -> dict[str, Any]:
    """The settings an object or module holds (``"pkg.module"`` or ``"pkg.module:attr"`` too).

    As in Celery, lower-case public attributes are settings, and an upper-case one is read when
    it is one of Celery's old names (``CELERY_ALWAYS_EAGER``, ``BROKER_URL``); other upper-case
    names (a Django project's ``DEBUG``) are not settings. Unlike Celery, a lower-case name that
    looks like a setting (it starts as settings do: ``broker_``, ``task_``, ``worker_``..., or is
    close to one) but is none fails, naming itself; a module's other names (imports, helpers such
    as ``media_exchange = Exchange(...)``) are skipped. In a dict, every key must be a setting.
    With ``namespace="CELERY"`` (Django style) attributes ``CELERY_<SETTING>`` are read, each
    of which must be known (and, as Celery does, a setting's old name or plain current name,
    below a ``CELERY_`` one).
    Where a setting is given by its current and its old name, the current one wins; Django's
    ``TIME_ZONE`` is the time zone when none is given.
    """
    if isinstance(obj, str):
        obj = _import_object(obj)
    current: dict[str, Any] = {}
    old: dict[str, Any] = {}
    prefix = f"{namespace}_" if namespace else None
    for key in list(_keys(obj)):
        if not isinstance(key, str) or key.startswith("_") or not _may_be_setting(key, prefix):
            continue
        # read only now: an object's other attributes may be costly or raise when read (Django's
        # settings refuse to give an empty SECRET_KEY, and hide the lower-case names dir() lists)
        value = obj[key] if isinstance(obj, Mapping) else getattr(obj, key, _ABSENT)
        if value is _ABSENT or isinstance(
            value, types.ModuleType | type | types.FunctionType | __future__._Feature
        ):
            continue  # imports, classes, helpers, `from __future__ import annotations`
        if prefix is not None and key.startswith(prefix):
            name = key[len(prefix) :].lower()
            if name in _DEFAULTS:
                current[name] = value
            elif key in OLD_NAMES:
                old[OLD_NAMES[key]] = value
            else:
                raise ImproperlyConfigured(f"unknown setting {key!r}{_suggest(name)}")
        elif key in OLD_NAMES:
            old[OLD_NAMES[key]] = value
        elif prefix is None and key == key.lower():
            if not isinstance(obj, Mapping) and not _looks_like_a_setting(key):
                continue  # a config module's own helper (``media_exchange = Exchange(...)``)
            current[canonical_name(key)] = value
        elif key in _DEFAULTS:  # a current name without the namespace: Celery reads it too
            old[key] = value
        elif key.startswith(("CELERY", "BROKER_")):
            _warn_not_a_setting(key)
    if "timezone" not in current and "timezone" not in old and "TIME_ZONE" in _keys(obj):
        old["timezone"] = _get(obj, "TIME_ZONE")
    merged = {**old, **current}
    return {name: validate(name, value) for name, value in merged.items()}


#: What ``from_object`` reads for an attribute that ``dir()`` lists but ``getattr`` refuses.
_ABSENT = object()


def _may_be_setting(key: str, prefix: str | None) -> bool:
    """Whether ``from_object`` reads ``key`` at all: a name in the namespace, one of Celery's
    old names, a lower-case name, or an upper-case one that looks meant for Celery (to warn)."""
    return (
        (prefix is not None and key.startswith(prefix))
        or key in OLD_NAMES
        or key == key.lower()
        or key.startswith(("CELERY", "BROKER_"))
    )


def _warn_not_a_setting(key: str) -> None:
    """An upper-case name that looks meant for celeriac but is not read: say so, since Celery
    would ignore it silently (a Django ``CELERY_BROKER_URL`` read without the namespace)."""
    if key.startswith("CELERY_") and key[7:].lower() in _DEFAULTS:
        logger.warning(
            "%s is not read: settings named CELERY_<SETTING> need namespace='CELERY'", key
        )
    elif _suggest(key):
        logger.warning("%s is not one of Celery's setting names%s", key, _suggest(key))


def _keys(obj: Any) -> Iterable[str]:
    return obj.keys() if isinstance(obj, Mapping) else dir(obj)


def _get(obj: Any, key: str) -> Any:
    return obj[key] if isinstance(obj, Mapping) else getattr(obj, key)


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
