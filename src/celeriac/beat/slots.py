"""Which slots of an entry fire now: a pure function of the entry, its last slot and the time.

A *slot* is an instant a schedule fires at. Every beat computes the same slots for an entry,
because they are derived from what the store holds (where the entry's walk stands) and from the
schedule alone: a crontab's slots are wall-clock times, and an interval's lie on a grid from the
Unix epoch (``schedule(30)`` fires at :00 and :30 of every minute), not on the moment some beat
happened to read the entry. So two beats that both believe they lead name a
firing alike (:func:`slot_key`), and the broker drops the second send of it.

What happens to slots that passed while no beat led (a restart, a failover) is the entry's
``catch_up`` policy, within ``misfire_grace`` (see :mod:`celeriac.beat.entry`); a paused entry's
slots pass silently (resuming it does not replay them).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

from celeriac import schedules
from celeriac.beat.entry import Entry

#: Slots more than this far behind are not walked one by one (an every-second entry after a
#: day away would be 86,400 steps): the walk jumps ahead and counts them as missed.
MAX_WALK = 10_000

#: A ``catch_up="skip"`` entry still fires a slot this late (the beat's own wake-up delay).
ON_TIME = timedelta(seconds=2)

_NAMESPACE = uuid.UUID("6b1f1f0e-5c1d-4c2e-9a7e-1f3c2b9d0a11")


@dataclass(slots=True)
class Plan:
    """What to do with an entry now."""

    fire: list[datetime] = field(default_factory=list)  # oldest first
    missed: list[datetime] = field(default_factory=list)
    skipped_ahead: bool = False  # more slots were missed than listed (see MAX_WALK)
    last: datetime | None = None  # the newest slot handled now (to record), if any
    next_due: datetime | None = None  # the first slot after now


def slot_key(name: str, slot: datetime) -> str:
    """The name of one firing: the same in every beat, so the broker can drop a second send."""
    return f"{name}@{slot.astimezone(UTC).isoformat()}"


def slot_task_id(name: str, slot: datetime) -> str:
    """The task id of one firing: derived from :func:`slot_key`, so a doubled send (on a broker
    that cannot drop it) is at least one task id, one result."""
    return str(uuid.uuid5(_NAMESPACE, slot_key(name, slot)))


def next_slot(entry: Entry, after: datetime, tz: tzinfo | None) -> datetime:
    """The entry's first slot strictly after ``after``. An interval's slots lie on a grid from
    the Unix epoch (``schedule(30)``: :00 and :30 of every minute), so every beat finds the same
    ones from any starting point; a relative interval, a crontab and solar events come from
    the schedule's own ``next_after``."""
    sched = entry.schedule
    if isinstance(sched, schedules.schedule) and not sched.relative:
        every = sched.seconds
        step = math.floor(after.timestamp() / every) + 1
        return datetime.fromtimestamp(step * every, UTC)
    return sched.next_after(after, tz)


def plan(entry: Entry, last: float | None, now: datetime, tz: tzinfo | None) -> Plan:
    """The slots of ``entry`` due at ``now`` after the ``last`` one handled (a UNIX time, or
    None for a new entry), split into those to fire and those given up, by the entry's policy."""
    if last is None:
        return Plan(next_due=next_slot(entry, now, tz))
    result = Plan()
    due: list[datetime] = []
    cursor = datetime.fromtimestamp(last, UTC)
    while True:
        upcoming = next_slot(entry, cursor, tz)
        if upcoming > now:
            break
        due.append(upcoming)
        cursor = upcoming
        if len(due) > MAX_WALK:
            # far behind: what lies before the grace window is missed without being walked
            horizon = now - timedelta(seconds=entry.misfire_grace or 0) - ON_TIME
            if horizon > cursor:
                result.missed.extend(due)
                result.skipped_ahead = True
                due = []
                cursor = horizon
    result.next_due = upcoming
    if not due:
        result.last = result.missed[-1] if result.missed else None
        return result
    result.last = due[-1]
    if entry.paused:
        return result  # a paused entry's slots pass: nothing fired, nothing reported
    grace = entry.misfire_grace
    in_grace = [s for s in due if grace is None or (now - s).total_seconds() <= grace]
    result.missed.extend(s for s in due if s not in in_grace)
    if entry.catch_up == "all":
        result.fire = in_grace
    elif entry.catch_up == "latest":
        result.fire = in_grace[-1:]
        result.missed.extend(in_grace[:-1])
    else:  # skip: only the newest slot, and only if it is (almost) on time
        on_time = in_grace[-1:] if in_grace and now - in_grace[-1] <= ON_TIME else []
        result.fire = on_time
        result.missed.extend(s for s in in_grace if s not in on_time)
    result.missed.sort()
    return result
