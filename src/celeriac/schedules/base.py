"""What every schedule is: ``next_after(dt)``, its zone, a stored form, and Celery's helpers.

``next_after`` is the contract the scheduler relies on; the rest is built on it, so a schedule
type only says how to find its next instant (``_next``) and how it is described (``_key``,
``to_dict``). The stored form is a plain JSON-able dict with a ``"type"``, read back by
:meth:`BaseSchedule.from_dict`, which finds the class by that type.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, ClassVar, NamedTuple, Self
from zoneinfo import ZoneInfo

from celeriac.schedules.errors import ScheduleError
from celeriac.schedules.zones import ZoneLike, require_aware, to_zone, zone_name

__all__ = ["BaseSchedule", "schedstate"]

_UTC = ZoneInfo("UTC")


class schedstate(NamedTuple):
    """Celery's answer of ``is_due``: due now or not, and seconds until it is worth asking again."""

    is_due: bool
    next: float


class BaseSchedule(ABC):
    """A schedule: a rule that, given an instant, says the next instant it fires at.

    ``tz`` is the schedule's own zone (a name or a ZoneInfo), used to read its wall-clock fields;
    without one, the zone is the ``default_tz`` the caller passes (the app's ``timezone``
    setting), and UTC without that. ``nowfun`` and ``app`` are Celery's, used only by the
    Celery-style helpers ``remaining_estimate`` and ``is_due``.
    """

    #: The ``"type"`` of the stored form; each concrete schedule sets its own.
    kind: ClassVar[str] = ""
    _kinds: ClassVar[dict[str, type[BaseSchedule]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):
            BaseSchedule._kinds[cls.kind] = cls

    def __init__(
        self,
        tz: ZoneLike | None = None,
        nowfun: Callable[[], datetime] | None = None,
        app: Any = None,
    ) -> None:
        self.tz: ZoneInfo | None = None if tz is None else to_zone(tz, f"{self.kind} tz")
        self.nowfun = nowfun
        self.app = app

    # -- the contract -------------------------------------------------------------------------

    def next_after(self, dt: datetime, default_tz: ZoneLike | None = None) -> datetime:
        """The first instant this schedule fires at strictly after ``dt``.

        ``dt`` must be aware (a naive one is refused: its instant would depend on a guess). The
        zone the schedule reads wall-clock times in is its own ``tz`` if it has one, else
        ``default_tz`` (pass the app's ``timezone`` setting), else UTC. The result is aware, in
        UTC, and strictly after ``dt``: UTC so that it can be compared and subtracted safely (two
        datetimes of one ZoneInfo subtract by wall clock, and one in a repeated hour never
        equals a datetime of another zone); ``.astimezone(zone)`` shows it in local time.
        """
        require_aware(dt, f"{type(self).__name__}.next_after")
        zone = self.zone(default_tz)
        # In UTC from here on: two datetimes with the same tzinfo compare by wall clock and
        # ignore ``fold``, so the two passes of a repeated hour would compare equal.
        dt = dt.astimezone(UTC)
        result = self._next(dt, zone).astimezone(UTC)
        if not result > dt:  # a broken schedule must not make the scheduler spin
            raise RuntimeError(f"{self!r}.next_after({dt.isoformat()}) gave {result.isoformat()}")
        return result

    def zone(self, default_tz: ZoneLike | None = None) -> tzinfo:
        """The zone wall-clock times are read in: the schedule's own, else ``default_tz``, else
        UTC."""
        if self.tz is not None:
            return self.tz
        if default_tz is None:
            return _UTC
        if isinstance(default_tz, tzinfo) and not isinstance(default_tz, ZoneInfo):
            return default_tz  # a fixed offset is fine to compute with; only stored zones are named
        return to_zone(default_tz, "timezone")

    def with_tz(self, tz: ZoneLike | None) -> Self:
        """A copy of this schedule with its own zone ``tz`` (None: the caller's default again)."""
        clone = copy.copy(self)
        clone.tz = None if tz is None else to_zone(tz, f"{self.kind} tz")
        return clone

    @abstractmethod
    def _next(self, dt: datetime, zone: tzinfo) -> datetime:
        """The next firing strictly after ``dt`` (in UTC), reading wall times in ``zone``.

        Compare instants in UTC (``x.astimezone(UTC) > dt``), never two datetimes of ``zone``.
        """

    # -- description ----------------------------------------------------------------------------

    @abstractmethod
    def _key(self) -> tuple[Any, ...]:
        """What makes two schedules the same (and their hash)."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The stored form: JSON-able, with ``"type"``; :meth:`from_dict` reads it back."""

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any]) -> BaseSchedule:
        raise NotImplementedError

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> BaseSchedule:
        """The schedule a :meth:`to_dict` form describes; a bad form fails naming what is wrong."""
        if not isinstance(data, Mapping):
            raise ScheduleError(f"schedule: {data!r} is not a stored schedule (a dict)")
        kind = data.get("type")
        cls = BaseSchedule._kinds.get(kind) if isinstance(kind, str) else None
        if cls is None:
            known = ", ".join(sorted(BaseSchedule._kinds))
            raise ScheduleError(f"schedule type: {kind!r} is not one of {known}")
        try:
            return cls._from_fields(data)
        except KeyError as exc:
            raise ScheduleError(f"{kind} schedule: the stored form lacks {exc.args[0]!r}") from exc

    def _tz_name(self) -> str | None:
        return zone_name(self.tz)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BaseSchedule):
            return type(self) is type(other) and self._key() == other._key()
        return NotImplemented

    def __hash__(self) -> int:
        return hash((type(self).__name__, *self._key()))

    def __reduce__(self) -> tuple[Any, ...]:
        return (BaseSchedule.from_dict, (self.to_dict(),))

    # -- Celery's helpers -----------------------------------------------------------------------

    def now(self) -> datetime:
        """Now, from ``nowfun`` if given (Celery's hook for tests), else the clock, in UTC."""
        return self._aware(self.nowfun() if self.nowfun is not None else datetime.now(UTC))

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Celery's: how long from now until the run after ``last_run_at`` (negative if late).

        A naive ``last_run_at`` is read as UTC, as Celery does; the zone is the schedule's own,
        else the ``timezone`` of the ``app`` it was given, else UTC.
        """
        last = self._aware(last_run_at)
        return self.next_after(last, self._app_zone()) - self.now()

    def is_due(self, last_run_at: datetime) -> schedstate:
        """Celery's ``(is_due, next)``: due if the run after ``last_run_at`` is not in the future;
        ``next`` is the seconds until the following run (from now) or until that run."""
        now = self.now()
        following = self.next_after(self._aware(last_run_at), self._app_zone())
        if following <= now:
            return schedstate(True, (self.next_after(now, self._app_zone()) - now).total_seconds())
        return schedstate(False, (following - now).total_seconds())

    def _app_zone(self) -> str | None:
        conf = getattr(self.app, "conf", None)
        name = getattr(conf, "timezone", None)
        return name if isinstance(name, str) and name else None

    @staticmethod
    def _aware(dt: datetime) -> datetime:
        return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt
