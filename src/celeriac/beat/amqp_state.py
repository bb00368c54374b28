"""The RabbitMQ beat store's data: the state snapshot and the change commands, pure and I/O-free.

:mod:`celeriac.beat.amqp_store` keeps the beats' state as one message (a :class:`Snapshot`) in a
last-value queue and sends every entry change as a :class:`Command` through a queue that the
leader applies. This module is what both ends agree on: the JSON layout, how a command changes a
snapshot, and how a process that is not the leader sees its own changes before the leader has
applied them. It does no I/O, so it is tested without a broker.

**Exactly-once application.** A command is delivered at least once (the leader acks it only after
the snapshot that includes it is confirmed; a leader that dies in between leaves it to be
delivered again). Each command carries its sender's id and a sequence number that the sender
raises by one per command and sends in order (one channel, one confirm at a time), so a snapshot
records per sender the last sequence number applied (:attr:`Snapshot.applied`); a command at or
below it is a repeat and changes nothing. The table keeps the :data:`SENDERS_KEPT` senders applied
most recently: a repeat only happens on a leader's takeover, long before that many other senders
have written.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from celeriac.errors import DecodeError

#: Senders whose last applied sequence number a snapshot remembers (see the module docstring).
SENDERS_KEPT = 256
#: Snapshots larger than this are zlib-compressed (10,000 entries are a few MB of JSON).
COMPRESS_OVER = 64 * 1024
JSON = "application/json"

Op = Literal["put", "delete", "runs"]
_OPS = ("put", "delete", "runs")


def _dumps(value: Any, what: str) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        raise ValueError(f"beat {what} must be JSON-serialisable: {exc}") from None


def _object(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise DecodeError(f"{what} is not a JSON object")
    return value


def _merge_runs(into: dict[str, float], runs: Mapping[str, float]) -> None:
    """A run record never moves back: a late record of an earlier slot (a paused old leader)
    must not make the next leader fire that slot again (the other stores do the same)."""
    for name, at in runs.items():
        if float(at) > into.get(name, float("-inf")):
            into[name] = float(at)


@dataclass
class Command:
    """One change sent to the leader: ``put`` entries, ``delete`` names, or ``runs`` records."""

    sender: str
    seq: int
    op: Op
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    runs: dict[str, float] = field(default_factory=dict)

    @classmethod
    def put(cls, sender: str, seq: int, entries: Mapping[str, Mapping[str, Any]]) -> Command:
        return cls(sender, seq, "put", entries={str(k): dict(v) for k, v in entries.items()})

    @classmethod
    def delete(cls, sender: str, seq: int, names: Iterable[str]) -> Command:
        return cls(sender, seq, "delete", names=[str(name) for name in names])

    @classmethod
    def record(cls, sender: str, seq: int, runs: Mapping[str, float]) -> Command:
        return cls(sender, seq, "runs", runs={str(k): float(v) for k, v in runs.items()})

    def encode(self) -> bytes:
        payload: dict[str, Any] = {"sender": self.sender, "seq": self.seq, "op": self.op}
        if self.op == "put":
            payload["entries"] = self.entries
        elif self.op == "delete":
            payload["names"] = self.names
        else:
            payload["runs"] = self.runs
        return _dumps(payload, "entries")

    @classmethod
    def decode(cls, body: bytes) -> Command:
        """The command in ``body``; :class:`DecodeError` names what is wrong with it."""
        data = _object(body, "beat command")
        op, sender, seq = data.get("op"), data.get("sender"), data.get("seq")
        if op not in _OPS or not isinstance(sender, str) or not isinstance(seq, int):
            raise DecodeError(f"beat command without a valid op/sender/seq: {body[:120]!r}")
        try:
            if op == "put":
                entries = {str(k): dict(v) for k, v in dict(data.get("entries") or {}).items()}
                return cls(sender, seq, "put", entries=entries)
            if op == "delete":
                return cls(sender, seq, "delete", names=[str(n) for n in data.get("names") or []])
            runs = {str(k): float(v) for k, v in dict(data.get("runs") or {}).items()}
            return cls(sender, seq, "runs", runs=runs)
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"beat {op} command is malformed: {exc}") from None


@dataclass
class Snapshot:
    """The whole state: entries, runs, and the book-keeping that orders and de-duplicates.

    ``serial`` rises with every snapshot written (it picks the newest when a queue briefly holds
    two); ``version`` with every entry change (what :meth:`BeatStore.version` reports); runs
    change neither the version nor the entries, so recording a batch does not make the leader
    reload its entries.
    """

    serial: int = 0
    version: int = 0
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, float] = field(default_factory=dict)
    #: sender -> [last sequence number applied, serial of the snapshot that applied it]
    applied: dict[str, list[int]] = field(default_factory=dict)
    leader: str = ""

    def done(self, sender: str) -> int:
        """The last sequence number of ``sender`` this snapshot includes (0: none)."""
        record = self.applied.get(sender)
        return record[0] if record else 0

    def admit(self, command: Command) -> Literal["next", "repeat", "early"]:
        """Where ``command`` stands in its sender's order: the next one to apply, a repeat of
        one applied, or early (one before it has not been applied yet). A sender this
        snapshot does not know (new, or forgotten) has no order to keep: its command is next."""
        record = self.applied.get(command.sender)
        if record is None or command.seq == record[0] + 1:
            return "next"
        return "repeat" if command.seq <= record[0] else "early"

    def apply(self, command: Command) -> bool:
        """Apply ``command`` unless it is a repeat; whether it was new."""
        if command.seq <= self.done(command.sender):
            return False
        self.change(command)
        self.applied[command.sender] = [command.seq, self.serial + 1]
        if len(self.applied) > SENDERS_KEPT:
            oldest = sorted(self.applied, key=lambda s: self.applied[s][1])
            for sender in oldest[: len(self.applied) - SENDERS_KEPT]:
                del self.applied[sender]
        return True

    def change(self, command: Command) -> None:
        """The change itself (no de-duplication)."""
        if command.op == "put":
            self.entries.update(command.entries)  # readers get copies (AmqpBeatStore.entries)
            self.version += 1
        elif command.op == "delete":
            for name in command.names:
                self.entries.pop(name, None)
                self.runs.pop(name, None)
            self.version += 1
        else:
            _merge_runs(self.runs, command.runs)

    def record_runs(self, runs: Mapping[str, float]) -> None:
        """The leader's own run records (applied directly; they never move back)."""
        _merge_runs(self.runs, runs)

    def view(self, *commands: Iterable[Command]) -> Snapshot:
        """A copy with ``commands`` applied in order, each once (by sender and sequence number):
        what a store that does not lead shows, the snapshot plus the commands still waiting
        for a leader plus its own not yet in the snapshot."""
        view = Snapshot(
            serial=self.serial,
            version=self.version,
            entries=dict(self.entries),
            runs=dict(self.runs),
            applied={sender: list(record) for sender, record in self.applied.items()},
            leader=self.leader,
        )
        for batch in commands:
            for command in batch:
                view.apply(command)
        return view

    def encode(self) -> tuple[bytes, str]:
        """The message body and its content encoding (``zlib`` above :data:`COMPRESS_OVER`)."""
        body = _dumps(
            {
                "serial": self.serial,
                "version": self.version,
                "entries": self.entries,
                "runs": self.runs,
                "applied": self.applied,
                "leader": self.leader,
            },
            "entries",
        )
        if len(body) > COMPRESS_OVER:
            return zlib.compress(body, 1), "zlib"
        return body, "utf-8"

    @classmethod
    def decode(cls, body: bytes, encoding: str | None) -> Snapshot:
        """The snapshot in a message; :class:`DecodeError` names what is wrong with it."""
        if encoding == "zlib":
            try:
                body = zlib.decompress(body)
            except zlib.error as exc:
                raise DecodeError(f"beat snapshot does not decompress: {exc}") from None
        data = _object(body, "beat snapshot")
        try:
            return cls(
                serial=int(data.get("serial", 0)),
                version=int(data.get("version", 0)),
                entries={str(k): dict(v) for k, v in dict(data.get("entries") or {}).items()},
                runs={str(k): float(v) for k, v in dict(data.get("runs") or {}).items()},
                applied={
                    str(k): [int(v[0]), int(v[1])]
                    for k, v in dict(data.get("applied") or {}).items()
                },
                leader=str(data.get("leader", "")),
            )
        except (TypeError, ValueError, IndexError) as exc:
            raise DecodeError(f"beat snapshot is malformed: {exc}") from None


def newest(snapshots: Iterable[Snapshot]) -> Snapshot | None:
    """The snapshot written last (highest serial), if any."""
    return max(snapshots, key=lambda s: s.serial, default=None)


__all__ = ["COMPRESS_OVER", "JSON", "SENDERS_KEPT", "Command", "Snapshot", "newest"]
