"""Revokes that outlive the workers that heard them: kept on the broker until they expire.

A revoke broadcast on the control exchange reaches only the workers listening at that moment
(Celery's celery#818: a worker that restarts forgets it, one started later never hears it). So
``app.control.revoke`` also writes it here, with an expiry (``worker_revoke_expires``, 3 hours
by default), and every worker reads the live ones when it starts, then keeps listening.

A revoke names a task by its id, or a whole workflow by ``root_id`` (every task of a chain,
group or chord started from that root) or ``parent_id`` (every task one task sent). Each broker
keeps them in its own way, behind :class:`RevokeStore`:

==========  ====================================================================================
memory      a dict shared by the transports of one ``memory://`` URL
sqlite      the table ``revokes`` in the broker's file (key, expiry), purged as it is read
redis       the sorted set ``<key_prefix>revokes``, scored by expiry, purged as it is read
amqp        the stream ``celeriac.revokes`` (see :mod:`celeriac.control.revokes_amqp`)
==========  ====================================================================================

Clocks: an expiry is a UNIX time taken where the revoke was made; hosts sharing a broker are
expected to agree on the time to within seconds, which is nothing against hours.
"""

from __future__ import annotations

import abc
import importlib
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from celeriac.errors import ImproperlyConfigured

if TYPE_CHECKING:
    from celeriac.app.base import Celeriac

By = Literal["id", "root_id", "parent_id"]
#: What a revoke may name (``revoke(..., by=...)``).
BY: tuple[By, ...] = ("id", "root_id", "parent_id")
#: Celery's REVOKE_EXPIRES: how long a revoke is honoured when nothing says otherwise.
DEFAULT_EXPIRES = 10_800.0


@dataclass(frozen=True, slots=True)
class Revoke:
    """One revoke: ``value`` is a task id, or a root or parent id when ``by`` says so."""

    value: str
    by: By = "id"
    expires_at: float = 0.0

    @property
    def key(self) -> str:
        """How stores name it: ``id:<task id>``, ``root_id:<id>``, ``parent_id:<id>``."""
        return f"{self.by}:{self.value}"

    @classmethod
    def from_key(cls, key: str, expires_at: float) -> Revoke:
        by, _, value = key.partition(":")
        if by not in BY or not value:
            raise ValueError(f"not a revoke key: {key!r}")
        return cls(value, by, expires_at)


def check_by(by: str) -> By:
    """``by`` when it is one of :data:`BY`, else ImproperlyConfigured naming the choices."""
    if by not in BY:
        raise ImproperlyConfigured(f"revoke by={by!r}: choose one of {', '.join(BY)}")
    return by


def revokes_for(
    values: Iterable[str], by: By, expires: float, now: float | None = None
) -> list[Revoke]:
    at = (time.time() if now is None else now) + expires
    return [Revoke(str(value), by, at) for value in values]


class RevokeStore(abc.ABC):
    """Where a broker keeps live revokes. Opened and used on one event loop."""

    async def open(self) -> None:
        """Connect and create what is missing (idempotent)."""

    async def close(self) -> None:
        """Release connections."""

    @abc.abstractmethod
    async def add(self, revokes: Sequence[Revoke]) -> None:
        """Keep these revokes until their expiry (a revoke kept already keeps the later one)."""

    @abc.abstractmethod
    async def live(self, limit: int) -> list[Revoke]:
        """The revokes not expired yet, the ``limit`` that expire last; expired ones may be
        dropped on the way."""


class MemoryRevokeStore(RevokeStore):
    """For ``memory://``: one dict per broker URL, shared by its transports in this process."""

    def __init__(self, url: str) -> None:
        from celeriac.transports.memory import shared_state

        self._table: _Table = shared_state(url, "revokes", _Table)

    async def add(self, revokes: Sequence[Revoke]) -> None:
        self._table.add(revokes)

    async def live(self, limit: int) -> list[Revoke]:
        return self._table.live(limit)


class _Table:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.expiry: dict[str, float] = {}

    def add(self, revokes: Iterable[Revoke]) -> None:
        with self.lock:
            for revoke in revokes:
                self.expiry[revoke.key] = max(self.expiry.get(revoke.key, 0.0), revoke.expires_at)

    def live(self, limit: int) -> list[Revoke]:
        now = time.time()
        with self.lock:
            for key in [k for k, at in self.expiry.items() if at <= now]:
                del self.expiry[key]
            newest = sorted(self.expiry.items(), key=lambda item: item[1])[-limit:]
        return [Revoke.from_key(key, at) for key, at in newest]


#: Broker URL scheme -> ``module:factory`` taking ``(url, broker_transport_options, expires)``.
STORES: dict[str, str] = {
    "memory": "celeriac.control.revokes:memory_store",
    "sqlite": "celeriac.control.revokes_sqlite:SQLiteRevokeStore",
    "redis": "celeriac.control.revokes_redis:RedisRevokeStore",
    "rediss": "celeriac.control.revokes_redis:RedisRevokeStore",
    "unix": "celeriac.control.revokes_redis:RedisRevokeStore",
    "redis+sentinel": "celeriac.control.revokes_redis:RedisRevokeStore",
    "sentinel": "celeriac.control.revokes_redis:RedisRevokeStore",
    "amqp": "celeriac.control.revokes_amqp:AmqpRevokeStore",
    "amqps": "celeriac.control.revokes_amqp:AmqpRevokeStore",
    "pyamqp": "celeriac.control.revokes_amqp:AmqpRevokeStore",
}


def memory_store(url: str, options: dict[str, Any], expires: float) -> RevokeStore:
    return MemoryRevokeStore(url)


def revoke_expires(app: Celeriac) -> float:
    """``worker_revoke_expires``, checked (a bad one fails naming the setting)."""
    expires = app.conf.worker_revoke_expires
    if not isinstance(expires, int | float) or isinstance(expires, bool) or expires <= 0:
        raise ImproperlyConfigured(
            f"setting 'worker_revoke_expires' must be a number of seconds > 0, not {expires!r}"
        )
    return float(expires)


def open_revoke_store(app: Celeriac) -> RevokeStore | None:
    """The (unopened) revoke store of ``app``'s broker; None for a broker that has none (a
    transport from a plug-in): revokes then live in the workers' memory only."""
    url = app.broker_url
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    target = STORES.get(scheme)
    if target is None:
        return None
    module_name, _, factory = target.partition(":")
    make = getattr(importlib.import_module(module_name), factory)
    options = dict(app.conf.broker_transport_options)
    store: RevokeStore = make(url, options, revoke_expires(app))
    return store
