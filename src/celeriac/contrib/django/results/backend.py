"""``django-db://``: results in a table of the project's database, through Django's ORM.

``django-db://`` uses the ``default`` database, ``django-db://<alias>`` another entry of
``DATABASES``. The app ``celeriac.contrib.django.results`` must be installed and migrated.

Writes are upserts (``INSERT ... ON CONFLICT (task_id) DO UPDATE``, one statement for a whole
batch of the worker's result writer); counters are incremented with ``UPDATE ... SET value =
value + n`` inside a transaction, which locks the row, so two workers joining one chord count
each member once. Each operation runs as Django runs a request: the connection is closed
afterwards if it became unusable or passed ``CONN_MAX_AGE`` (see
:mod:`celeriac.contrib.django.db`), and a read or write that met a connection broken under it
(a database restart) is run once more on a new one. An operation called inside a transaction of
the caller's (``update_state`` in a task that opened ``atomic()``) joins that transaction.

Waiting polls (every 5 to 50 ms), as for the SQLite backend: a database has no notification both
PostgreSQL and SQLite share; waiters keep their connection for the whole wait.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from celeriac.contrib.django.db import connection_for, run_idempotent
from celeriac.errors import BackendError, DecodeError, ImproperlyConfigured
from celeriac.results.base import Backend
from celeriac.utils.urls import redact_url

T = TypeVar("T")

APP = "celeriac.contrib.django.results"


def database_alias(url: str) -> str:
    """The ``DATABASES`` alias a ``django-db://[alias]`` URL names (``default`` when none)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "django-db":
        raise ImproperlyConfigured(f"result_backend {redact_url(url)!r} is not a django-db:// URL")
    alias = rest.strip("/")
    if "/" in alias or "?" in alias or "@" in alias:
        raise ImproperlyConfigured(
            f"result_backend {redact_url(url)!r}: expected django-db:// or django-db://<alias>"
        )
    return alias or "default"


class DjangoBackend(Backend):
    """Results in the Django database (see the module docstring)."""

    schemes: ClassVar[tuple[str, ...]] = ("django-db",)
    poll_min: ClassVar[float] = 0.005
    poll_max: ClassVar[float] = 0.05

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        if self.options:
            names = ", ".join(sorted(self.options))
            raise ImproperlyConfigured(
                f"result_backend {redact_url(url)!r}: unknown option(s) {names} "
                "(result_backend_transport_options)"
            )
        self.alias = database_alias(url)
        self._checked = False
        self._lock = threading.Lock()

    # -- the models, once Django is ready ------------------------------------------------------
    def _models(self) -> tuple[Any, Any]:
        """TaskResult and ResultCounter; the first call checks the configuration."""
        if not self._checked:
            with self._lock:
                if not self._checked:
                    self._check()
                    self._checked = True
        from celeriac.contrib.django.results.models import ResultCounter, TaskResult

        return TaskResult, ResultCounter

    def _check(self) -> None:
        from django.apps import apps  # type: ignore[import-untyped]
        from django.conf import settings  # type: ignore[import-untyped]

        where = f"result_backend {redact_url(self.url)!r}"
        if not apps.ready:
            raise ImproperlyConfigured(f"{where}: Django is not set up (django.setup())")
        if not apps.is_installed(APP):
            raise ImproperlyConfigured(f"{where}: add {APP!r} to INSTALLED_APPS, then migrate")
        if self.alias not in settings.DATABASES:
            raise ImproperlyConfigured(f"{where}: no database {self.alias!r} in DATABASES")

    def _idempotent(self, work: Callable[[], T]) -> T:
        try:
            return run_idempotent(self.alias, work)
        except ImproperlyConfigured:
            raise
        except Exception as exc:  # Django's DatabaseError and the driver's, by any name
            raise BackendError(f"result database {self.alias!r}: {exc}") from exc

    # -- storage -------------------------------------------------------------------------------
    def _write(self, task_id: str, data: bytes, expires_at: float | None) -> None:
        self._write_many([(task_id, data, expires_at)])

    def _write_many(self, items: list[tuple[str, bytes, float | None]]) -> None:
        """One upsert statement for the batch (the last record of a task id wins)."""
        task_result, _ = self._models()
        latest = {task_id: (data, expires_at) for task_id, data, expires_at in items}
        rows = [
            task_result(task_id=task_id, expires_at=expires_at, data=data, **self._columns(data))
            for task_id, (data, expires_at) in latest.items()
        ]
        fields = ["status", "task_name", "worker", "result", "traceback", "date_done"]

        def upsert() -> None:
            task_result.objects.using(self.alias).bulk_create(
                rows,
                update_conflicts=True,
                unique_fields=["task_id"],
                update_fields=[*fields, "expires_at", "data"],
            )

        self._idempotent(upsert)

    def _columns(self, data: bytes) -> dict[str, Any]:
        """The readable columns of one encoded record."""
        try:
            meta = self._decode(data)
        except DecodeError:
            return {"status": "UNKNOWN"}
        return {
            "status": meta.status,
            "task_name": meta.name,
            "worker": meta.worker,
            "result": _as_json(meta.result),
            "traceback": meta.traceback,
            "date_done": _as_datetime(meta.date_done),
        }

    def _read(self, task_id: str) -> bytes | None:
        task_result, _ = self._models()
        from django.db.models import Q  # type: ignore[import-untyped]

        def read() -> bytes | None:
            live = Q(expires_at__isnull=True) | Q(expires_at__gt=time.time())
            found = (
                task_result.objects.using(self.alias)
                .filter(live, task_id=task_id)
                .values_list("data", flat=True)
                .first()
            )
            return None if found is None else bytes(found)

        return self._idempotent(read)

    def _delete(self, task_id: str) -> None:
        task_result, _ = self._models()
        self._idempotent(
            lambda: task_result.objects.using(self.alias).filter(task_id=task_id).delete()
        )

    # -- counters ------------------------------------------------------------------------------
    def _incr(self, key: str, amount: int, expires_at: float | None) -> int:
        return self._in_transaction(lambda: self._add(key, amount, expires_at))

    def join_chord(
        self, group_id: str, member_id: str, *, index: int | None = None
    ) -> tuple[bool, int]:
        """Mark the member and count it in one transaction: a process killed half-way leaves
        neither, so the member's redelivered message counts it."""
        expires_at = self._expires_at()

        def join() -> tuple[bool, int]:
            added = self._add(f"chord-member:{group_id}:{member_id}", 1, expires_at) == 1
            return added, self._add(f"chord-count:{group_id}", int(added), expires_at)

        return self._in_transaction(join)

    def _in_transaction(self, work: Callable[[], T]) -> T:
        """``work`` in one transaction; not repeated on failure (a counter may have moved)."""
        from django.db import transaction  # type: ignore[import-untyped]

        self._models()
        try:
            with connection_for(self.alias), transaction.atomic(using=self.alias):
                return work()
        except ImproperlyConfigured:
            raise
        except Exception as exc:
            raise BackendError(f"result database {self.alias!r}: {exc}") from exc

    def _add(self, key: str, amount: int, expires_at: float | None) -> int:
        """Add to a counter inside the current transaction; an expired one starts again from
        ``amount`` (as a Redis key that expired between two INCRBYs)."""
        from django.db import IntegrityError, transaction
        from django.db.models import Case, F, Q, Value, When

        _, counter = self._models()
        rows = counter.objects.using(self.alias)
        expired = Q(expires_at__isnull=False, expires_at__lte=time.time())
        while True:
            # the UPDATE takes the row's lock (PostgreSQL) or the database's (SQLite) before it
            # reads, so the value read after it is this transaction's own
            if rows.filter(key=key).update(
                value=Case(When(expired, then=Value(amount)), default=F("value") + amount),
                expires_at=expires_at,
            ):
                value: int = rows.filter(key=key).values_list("value", flat=True).get()
                return value
            try:
                with transaction.atomic(using=self.alias):  # a savepoint: a lost race is undone
                    rows.create(key=key, value=amount, expires_at=expires_at)
                return amount
            except IntegrityError:
                continue  # created meanwhile by another transaction: now there is a row to update

    # -- upkeep and waiting ----------------------------------------------------------------------
    def cleanup(self) -> int:
        """Delete expired results and counters; returns how many rows went."""
        task_result, counter = self._models()

        def clean() -> int:
            now = time.time()
            removed = 0
            for model in (task_result, counter):
                count, _ = (
                    model.objects.using(self.alias)
                    .filter(expires_at__isnull=False, expires_at__lte=now)
                    .delete()
                )
                removed += count
            return removed

        return self._idempotent(clean)

    def _wait(self, task_id: str, timeout: float | None) -> bytes | None:
        """Poll, on one connection for the whole wait (not one per poll)."""
        self._models()
        with connection_for(self.alias):
            return super()._wait(task_id, timeout)


def _as_json(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, default=repr, ensure_ascii=False)
    except (TypeError, ValueError):
        return json.dumps(repr(value))


def _as_datetime(timestamp: float | None) -> datetime | None:
    """A Unix time as Django stores it: aware (UTC) with ``USE_TZ``, naive local time without."""
    if timestamp is None:
        return None
    from django.conf import settings
    from django.utils import timezone  # type: ignore[import-untyped]

    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment if settings.USE_TZ else timezone.make_naive(moment)
