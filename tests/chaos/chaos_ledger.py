"""The chaos suite's accounts: every task sent, every run recorded, and what each fault excuses.

Three append-only files per run, each line one ``O_APPEND`` write:

* ``sent``: ``sent <seq> <kind> <time>`` once the broker accepted task ``seq`` (``kind``:
  ``late`` or ``early``), ``resent <seq>`` when a publish failed and was tried again under the
  same task id (it may have reached the broker the first time: a producer-side duplicate);
* ``record``: ``start``/``done <seq> <pid> <ppid> <time>`` from the tasks (:mod:`chaos_app`);
* ``faults``: ``fault <name> <t0> <t1>`` per fault applied (wall-clock start and end),
  ``hit <name> <t0> <t1> <pid>...`` naming every process the schedule killed or froze, and when.

:func:`settle_accounts` sorts every task into one case. A task sent and never done is *lost*,
unless it acked early and a process that started it was killed (Celery's at-most-once contract
for an early ack) - or, with no run recorded, a prefork child or worker was killed within
:data:`UNRECORDED_GRACE` seconds after it was sent: the child took it (and so acked it) and
died before its first line. A task done more than once is a duplicate, and each has its reason:

* ``late``: it acks late and a process running it was killed or frozen (the run began before
  the fault ended and had not finished a second before it began: a run just finished may
  not be acked yet): the one case the issue expects;
* ``early``: it acked early and its worker was killed or frozen right after it started: the
  early ack is sent without being waited for (``worker/acks.py``: gathered for 2 ms), so a
  kill in that window, or a freeze past the lease, brings the message back;
* ``ack lost``: it first finished during a fault of the broker or of the link (cut, half-open,
  blackhole, restart, disk full): its ack failed and the message came back after its lease;
* ``resent``: its publish was retried;
* anything else is *unexplained*, and fails the run.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

#: Faults of the broker or the link, in which an ack may be lost.
LINK_FAULTS = frozenset({"cut", "delay", "half-open", "blackhole", "restart", "disk-full"})
#: How long after a link fault an ack sent then may still fail (reconnects, loaded machine).
LINK_GRACE = 15.0
#: A run that finished this long before its process was killed or frozen may not be acked yet.
ACK_GRACE = 1.0
#: An early task with no run, sent this long before a kill, may have died unrecorded.
UNRECORDED_GRACE = 5.0


#: A fault on processes: (from, until, pids), wall-clock.
Hit = tuple[float, float, frozenset[int]]


@dataclass
class Runs:
    """What the record says of one task: (pid, ppid, time) of each start and each end."""

    started: list[tuple[int, int, float]] = field(default_factory=list)
    done: list[tuple[int, int, float]] = field(default_factory=list)


@dataclass
class Accounts:
    sent: int
    done: int
    #: Tasks sent and never done, not excused.
    lost: list[int]
    #: Early-ack tasks whose every run died with its process (at most once, by contract).
    died_with_runner: list[int]
    #: Duplicates by reason (see the module): late, early, ack lost, resent, unexplained.
    duplicates: dict[str, list[int]]
    #: Runs recorded for tasks never sent (should be none).
    strays: list[int]
    faults: dict[str, int]
    resent: int

    @property
    def unexplained(self) -> list[int]:
        return self.duplicates["unexplained"]

    @property
    def ok(self) -> bool:
        return not (self.lost or self.unexplained or self.strays)

    def summary(self) -> str:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        dups = ", ".join(f"{k} {len(v)}" for k, v in self.duplicates.items())
        return (
            f"sent {self.sent}, done {self.done}, lost {len(self.lost)}, "
            f"duplicates: {dups}; early-ack runs that died with their process "
            f"{len(self.died_with_runner)}; publishes retried {self.resent}; faults: {faults}"
        )

    def details(self, runs: dict[int, Runs]) -> str:
        lines = []
        for name, seqs in (("lost", self.lost), ("unexplained", self.unexplained)):
            lines += [f"{name}: task {seq}: {runs.get(seq, Runs())}" for seq in seqs[:10]]
        return "\n".join(lines)


def _lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def read_runs(record: Path) -> dict[int, Runs]:
    runs: dict[int, Runs] = defaultdict(Runs)
    for parts in _lines(record):
        phase, seq, pid, ppid, at = parts[0], int(parts[1]), int(parts[2]), int(parts[3]), parts[4]
        (runs[seq].started if phase == "start" else runs[seq].done).append((pid, ppid, float(at)))
    return dict(runs)


def _hit(task: Runs, run: tuple[int, int, float], hits: list[Hit]) -> bool:
    """Whether a fault hit this run: its process (or its worker) was killed or frozen after it
    began and before it finished (or within :data:`ACK_GRACE` after)."""
    pid, ppid, began = run
    ended = min((at for p, _, at in task.done if p == pid and at >= began), default=None)
    return any(
        (pid in pids or ppid in pids) and began <= t1 and (ended is None or ended >= t0 - ACK_GRACE)
        for t0, t1, pids in hits
    )


def settle_accounts(directory: Path) -> tuple[Accounts, dict[int, Runs]]:
    kinds: dict[int, str] = {}
    sent_at: dict[int, float] = {}
    resent: set[int] = set()
    for parts in _lines(directory / "sent"):
        if parts[0] == "sent":
            kinds[int(parts[1])] = parts[2]
            sent_at[int(parts[1])] = float(parts[3])
        elif parts[0] == "resent":
            resent.add(int(parts[1]))
    hits: list[Hit] = []
    kills: list[float] = []
    faults: dict[str, int] = defaultdict(int)
    windows: list[tuple[float, float]] = []
    for parts in _lines(directory / "faults"):
        if parts[0] == "fault":
            faults[parts[1]] += 1
            if parts[1] in LINK_FAULTS:
                windows.append((float(parts[2]) - 0.5, float(parts[3]) + LINK_GRACE))
        elif parts[0] == "hit":
            pids = frozenset(int(p) for p in parts[4:])
            hits.append((float(parts[2]), float(parts[3]), pids))
            if parts[1].startswith("kill"):
                kills.append(float(parts[2]))
    runs = read_runs(directory / "record")
    lost: list[int] = []
    died: list[int] = []
    duplicates: dict[str, list[int]] = {
        k: [] for k in ("late", "early", "ack lost", "resent", "unexplained")
    }
    for seq, kind in sorted(kinds.items()):
        task = runs.get(seq, Runs())
        touched = any(_hit(task, run, hits) for run in task.started)
        if not task.done:
            unrecorded = not task.started and any(
                0 <= at - sent_at[seq] <= UNRECORDED_GRACE for at in kills
            )
            (died if kind == "early" and (touched or unrecorded) else lost).append(seq)
            continue
        if len(task.done) == 1:
            continue
        first = min(at for _, _, at in task.done)
        if touched:
            reason = kind
        elif any(t0 <= first <= t1 for t0, t1 in windows):
            reason = "ack lost"
        elif seq in resent:
            reason = "resent"
        else:
            reason = "unexplained"
        duplicates[reason].append(seq)
    accounts = Accounts(
        sent=len(kinds),
        done=sum(1 for seq in kinds if runs.get(seq, Runs()).done),
        lost=lost,
        died_with_runner=died,
        duplicates=duplicates,
        strays=sorted(set(runs) - set(kinds)),
        faults=dict(faults),
        resent=len(resent),
    )
    return accounts, runs
