"""Where beat keeps its state: the leader's lease, the entries and the last slot fired per entry.

State lives in the broker's own store, never in a local file: a beat on any host reads the same
entries and the same record of what was fired, so a restart neither skips nor doubles a run, and
any beat can take over from a dead leader. One :class:`BeatStore` per broker kind:

* ``memory://`` — in this process (tests);
* ``sqlite://`` — tables in the broker's database file;
* ``redis://`` (and the other Redis URLs) — keys under the broker's ``key_prefix``;
* ``amqp://`` — leadership by a single-active-consumer queue; state in a last-value queue.

The contract (every method is a coroutine; all of them may be called from any beat):

* :meth:`lead` takes or keeps the leader's lease for ``ttl`` seconds; ``True`` while this node
  holds it. Renewing before the lease runs out keeps it; a dead leader's lease moves to another
  beat's next :meth:`lead` within ``ttl`` (at its expiry on Redis and SQLite; at once on
  RabbitMQ, which sees the dead connection). A store may grant two nodes the lease at once only
  for as long as a paused leader has not noticed its expiry: the broker's slot deduplication
  (:attr:`celeriac.transports.base.Outgoing.dedup_key`) keeps that from doubling a firing on
  the brokers that have it.
* :meth:`version` changes whenever an entry changes (a cheap poll tells the leader to reload).
* :meth:`entries` / :meth:`put_entries` / :meth:`delete_entries`: the entries as plain dicts
  (:meth:`celeriac.beat.entry.Entry.to_dict`), written by anyone (``celeriac beat add``).
* :meth:`runs` / :meth:`record_runs`: per entry, the UNIX timestamp of the last slot fired (or
  given up); written by the leader after each batch. A record never moves back (a late write
  of an older slot by a paused former leader changes nothing).

A change made by a beat that does not lead reaches the others when the leader next polls (about
a second); an empty put or delete leaves the version as it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any


class BeatStore(ABC):
    """The state of the beats of one app on one broker (see the module docstring)."""

    async def open(self) -> None:
        """Connect (called once before anything else)."""

    async def close(self) -> None:
        """Release connections; a leader should :meth:`resign` first."""

    @abstractmethod
    async def lead(self, node: str, ttl: float) -> bool:
        """Take or renew the leader's lease for ``ttl`` seconds; whether ``node`` leads now."""

    @abstractmethod
    async def resign(self, node: str) -> None:
        """Give the lease up at once if ``node`` holds it (a clean shutdown: no wait for expiry)."""

    @abstractmethod
    async def version(self) -> int:
        """A number that changes whenever an entry is put or deleted."""

    @abstractmethod
    async def entries(self) -> dict[str, dict[str, Any]]:
        """Every stored entry, by name."""

    @abstractmethod
    async def put_entries(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        """Insert or replace these entries (one atomic step) and change the version."""

    @abstractmethod
    async def delete_entries(self, names: Iterable[str]) -> None:
        """Remove these entries and their run records; change the version."""

    @abstractmethod
    async def runs(self) -> dict[str, float]:
        """Per entry, the UNIX timestamp of the last slot fired or given up."""

    @abstractmethod
    async def record_runs(self, runs: Mapping[str, float]) -> None:
        """Record the last slot of these entries (one atomic step)."""
