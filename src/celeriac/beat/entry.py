"""A periodic task: what to send, on which schedule, and what to do with late or overlapping runs.

Declared the way Celery declares them, in ``beat_schedule`` or with ``app.add_periodic_task``::

    app.conf.beat_schedule = {
        "cleanup": {"task": "shop.cleanup", "schedule": crontab(minute=0, hour=3),
                    "args": (7,), "kwargs": {}, "options": {"queue": "low", "expires": 600}},
        "ping": {"task": "shop.ping", "schedule": 30.0},
    }

plus celeriac's own keys, all optional:

* ``catch_up``: what a beat does with slots that passed while no beat led (a restart, a
  failover): ``"latest"`` (default: fire the newest one once), ``"all"`` (fire each), ``"skip"``
  (fire none; wait for the next slot);
* ``misfire_grace``: seconds after its slot within which a slot may still fire (default: no
  limit); an older one is missed;
* ``overlap``: ``"allow"`` (default) or ``"skip"``: no new run while the last one has not finished
  (read from the result backend);
* ``jitter``: up to this many seconds of random delay for each run (spreads a fleet's load);
* ``expires``: seconds after its slot after which a run is not started;
* ``paused``: kept but not fired.

A slot that is not fired (by ``catch_up``, ``misfire_grace`` or ``overlap``) is logged and sends
the ``beat_missed`` signal. Entries are stored as plain dicts (:meth:`Entry.to_dict`), so their
arguments must be JSON (what a task message carries anyway).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Literal

import orjson

from celeriac import schedules
from celeriac.errors import ImproperlyConfigured

CatchUp = Literal["latest", "all", "skip"]
Overlap = Literal["allow", "skip"]

#: celeriac's own keys of an entry (what to do with late or overlapping runs).
POLICY_KEYS = frozenset({"catch_up", "misfire_grace", "overlap", "jitter", "expires", "paused"})
#: The keys an entry of ``beat_schedule`` may have: Celery's, then celeriac's.
ENTRY_KEYS = frozenset({"task", "schedule", "args", "kwargs", "options", "relative"}) | POLICY_KEYS


@dataclass(frozen=True, slots=True)
class Entry:
    """One periodic task (see the module docstring). ``origin`` says who wrote it last: the
    code's ``beat_schedule`` (``"code"``) or a change at run time (``"runtime"``)."""

    name: str
    task: str
    schedule: schedules.BaseSchedule
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    catch_up: CatchUp = "latest"
    misfire_grace: float | None = None
    overlap: Overlap = "allow"
    jitter: float = 0.0
    expires: float | None = None
    paused: bool = False
    origin: Literal["code", "runtime"] = "code"

    def __post_init__(self) -> None:
        what = f"beat entry {self.name!r}"
        if not self.name or not isinstance(self.name, str):
            raise ImproperlyConfigured("a beat entry needs a name (a non-empty string)")
        if not isinstance(self.task, str) or not self.task:
            raise ImproperlyConfigured(f"{what}: 'task' must be a task name, not {self.task!r}")
        if self.catch_up not in ("latest", "all", "skip"):
            raise ImproperlyConfigured(
                f"{what}: catch_up must be 'latest', 'all' or 'skip', not {self.catch_up!r}"
            )
        if self.overlap not in ("allow", "skip"):
            raise ImproperlyConfigured(
                f"{what}: overlap must be 'allow' or 'skip', not {self.overlap!r}"
            )
        for key in ("misfire_grace", "expires"):
            value = getattr(self, key)
            if value is not None and not (_number(value) and value >= 0):
                raise ImproperlyConfigured(f"{what}: {key} must be seconds >= 0, not {value!r}")
        if not (_number(self.jitter) and self.jitter >= 0):
            raise ImproperlyConfigured(f"{what}: jitter must be seconds >= 0, not {self.jitter!r}")
        try:
            orjson.dumps([list(self.args), self.kwargs, self.options])
        except TypeError as exc:
            raise ImproperlyConfigured(
                f"{what}: args, kwargs and options must be JSON (they are stored): {exc}"
            ) from None

    @property
    def key(self) -> str:
        """What a change compares: every field but ``origin`` (JSON, stable)."""
        data = self.to_dict()
        del data["origin"]
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()

    def with_changes(self, **changes: Any) -> Entry:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "schedule": self.schedule.to_dict(),
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "options": dict(self.options),
            "catch_up": self.catch_up,
            "misfire_grace": self.misfire_grace,
            "overlap": self.overlap,
            "jitter": self.jitter,
            "expires": self.expires,
            "paused": self.paused,
            "origin": self.origin,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Entry:
        """The entry a store holds (``to_dict``'s output)."""
        return cls(
            name=data["name"],
            task=data["task"],
            schedule=schedules.from_dict(data["schedule"]),
            args=tuple(data.get("args") or ()),
            kwargs=dict(data.get("kwargs") or {}),
            options=dict(data.get("options") or {}),
            catch_up=data.get("catch_up", "latest"),
            misfire_grace=data.get("misfire_grace"),
            overlap=data.get("overlap", "allow"),
            jitter=float(data.get("jitter") or 0.0),
            expires=data.get("expires"),
            paused=bool(data.get("paused", False)),
            origin=data.get("origin", "code"),
        )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def as_schedule(value: Any, what: str) -> schedules.BaseSchedule:
    """Celery's forms of ``"schedule"``: seconds, a ``timedelta``, or a schedule object
    (``crontab``, ``solar``, ``schedule``, or anything with ``next_after`` and ``to_dict``)."""
    if _number(value):
        return schedules.schedule(float(value))
    if isinstance(value, timedelta):
        return schedules.schedule(value)
    if hasattr(value, "next_after") and hasattr(value, "to_dict"):
        result: schedules.BaseSchedule = value
        return result
    raise ImproperlyConfigured(
        f"{what}: 'schedule' must be seconds, a timedelta, crontab(...), solar(...) or "
        f"schedule(...), not {value!r}"
    )


def from_declaration(name: str, spec: Mapping[str, Any], origin: str = "code") -> Entry:
    """An entry of ``beat_schedule`` as Celery writes it; a mistake fails naming the entry."""
    what = f"beat_schedule[{name!r}]"
    if not isinstance(spec, Mapping):
        raise ImproperlyConfigured(f"{what} must be a dict with 'task' and 'schedule'")
    unknown = sorted(set(spec) - ENTRY_KEYS)
    if unknown:
        raise ImproperlyConfigured(
            f"{what}: unknown key(s) {unknown}; known: {', '.join(sorted(ENTRY_KEYS))}"
        )
    for required in ("task", "schedule"):
        if required not in spec:
            raise ImproperlyConfigured(f"{what}: {required!r} is missing")
    args = spec.get("args") or ()
    kwargs = spec.get("kwargs") or {}
    options = spec.get("options") or {}
    if not isinstance(args, list | tuple):
        raise ImproperlyConfigured(f"{what}: 'args' must be a list or tuple, not {args!r}")
    if not isinstance(kwargs, Mapping) or not isinstance(options, Mapping):
        raise ImproperlyConfigured(f"{what}: 'kwargs' and 'options' must be dicts")
    return Entry(
        name=name,
        task=spec["task"],
        schedule=as_schedule(spec["schedule"], what),
        args=tuple(args),
        kwargs=dict(kwargs),
        options=dict(options),
        catch_up=spec.get("catch_up", "latest"),
        misfire_grace=spec.get("misfire_grace"),
        overlap=spec.get("overlap", "allow"),
        jitter=float(spec.get("jitter") or 0.0),
        expires=spec.get("expires"),
        paused=bool(spec.get("paused", False)),
        origin="runtime" if origin == "runtime" else "code",
    )
