"""Dead letters as the dashboard shows and handles them: grouped by reason, requeued or deleted
one at a time, by selection, or every one matching a filter.

``Transport.dead_letters`` lists a queue's newest dead letters; they carry no id, so each is
named here by a fingerprint (a hash of its queue, payload and time of failure), stable between
two page loads. Requeueing publishes the message again, unchanged, to its queue through the
default exchange (every transport routes ``""`` + queue name to that queue). The broker is
then asked to delete the letters (``Transport.remove_dead_letters(queue, letters)``, matched by
their ids); what it could not delete (a broker that cannot, whose default removes nothing) is
recorded as handled in the history file and hidden from the list until the broker's own
retention drops it, so a requeued letter is never offered twice.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from celeriac.errors import CeleriacError
from celeriac.protocol.message import Message
from celeriac.transports.base import DeadLetter, Outgoing, Transport

#: Dead letters read per queue at most (the newest).
SCAN_LIMIT = 1000
_IDS = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\b0x[0-9a-f]+\b", re.I
)


def fingerprint(letter: DeadLetter) -> str:
    digest = hashlib.sha256()
    digest.update(letter.queue.encode())
    digest.update((letter.id or "").encode())  # two alike letters differ
    digest.update(repr(letter.failed_at).encode())
    digest.update(letter.payload)
    return digest.hexdigest()[:20]


def reason_group(reason: str) -> str:
    """The reason with task ids and addresses blanked, so that letters that failed alike
    group together (``task t.x[<id>]: ...``)."""
    return _IDS.sub("<id>", reason)[:300]


@dataclass(frozen=True)
class Letter:
    """One dead letter, decoded as far as it decodes."""

    fingerprint: str
    queue: str
    reason: str
    group: str
    delivery_count: int
    failed_at: float
    task: str | None
    task_id: str | None
    args: str | None
    letter: DeadLetter

    def matches(self, text: str, group: str) -> bool:
        if group and self.group != group:
            return False
        if not text:
            return True
        needle = text.lower()
        return any(
            needle in (value or "").lower()
            for value in (self.task, self.task_id, self.reason, self.args)
        )


def describe(letter: DeadLetter) -> Letter:
    task = task_id = args = None
    try:
        message = Message.from_wire(letter.payload)
        headers = message.headers
        task = str(headers.get("task")) if headers.get("task") else None
        task_id = str(headers.get("id")) if headers.get("id") else None
        shown = headers.get("argsrepr")
        args = str(shown) if shown is not None else None
    except (CeleriacError, ValueError, TypeError):
        pass
    return Letter(
        fingerprint(letter),
        letter.queue,
        letter.reason,
        reason_group(letter.reason),
        letter.delivery_count,
        letter.failed_at,
        task,
        task_id,
        args,
        letter,
    )


async def letters(transport: Transport, queue: str, handled: set[str]) -> list[Letter]:
    """The queue's dead letters not handled here yet, newest first."""
    found = await transport.dead_letters(queue, SCAN_LIMIT)
    out = [describe(letter) for letter in found]
    return [item for item in out if item.fingerprint not in handled]


def groups(items: Sequence[Letter]) -> list[tuple[str, int]]:
    """``(reason group, count)``, the largest first."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.group] = counts.get(item.group, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


async def requeue(transport: Transport, items: Sequence[Letter]) -> list[tuple[Letter, str]]:
    """Publish each letter's message to its queue again; ``(letter, error)`` for those that
    could not be (an undecodable message stays a dead letter)."""
    failed: list[tuple[Letter, str]] = []
    outgoing: list[Outgoing] = []
    sent: list[Letter] = []
    for item in items:
        try:
            message = Message.from_wire(item.letter.payload)
        except (CeleriacError, ValueError, TypeError) as exc:
            failed.append((item, f"cannot be decoded, so not requeued: {exc}"))
            continue
        outgoing.append(Outgoing(message, "", item.queue, wire=item.letter.payload))
        sent.append(item)
    if outgoing:
        counts = await transport.publish_batch(outgoing)
        for item, reached in zip(sent, counts, strict=True):
            if not reached:
                failed.append((item, "no queue took it (was the queue deleted?)"))
    return failed


async def remove(transport: Transport, queue: str, items: Sequence[Letter]) -> int:
    """Ask the broker to delete these letters; how many it removed (0: it cannot)."""
    if not items:
        return 0
    return await transport.remove_dead_letters(queue, [item.letter for item in items])
