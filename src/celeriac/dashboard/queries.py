"""Reading the history: task search, one task's detail, timeline and workflow tree, and the
per-minute series the overview draws.

Every query is bounded (a page, a tree of at most ``MAX_TREE`` tasks, a window of minutes), so
no page of the dashboard reads the whole file. Search filters combine with AND; ``args`` is a
substring of the arguments' or keyword arguments' repr (a scan, limited to one page).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from celeriac.dashboard.store import SERIES_COUNTS, HistoryStore

#: Tasks shown per page of a search.
PAGE_SIZE = 50
#: Tasks of one workflow shown at most.
MAX_TREE = 500
#: Task states, as a search offers them.
STATES = (
    "PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED", "REJECTED",
)  # fmt: skip


@dataclass(frozen=True)
class TaskFilter:
    """What a task search asks for; empty fields do not filter."""

    id: str = ""
    name: str = ""
    state: str = ""
    worker: str = ""
    args: str = ""
    since: float | None = None
    until: float | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.id:
            clauses.append("id LIKE ? ESCAPE '\\'")
            params.append(_like_prefix(self.id))
        if self.name:
            clauses.append("name LIKE ? ESCAPE '\\'")
            params.append(_like_contains(self.name))
        if self.state:
            clauses.append("state = ?")
            params.append(self.state.upper())
        if self.worker:
            clauses.append("worker LIKE ? ESCAPE '\\'")
            params.append(_like_contains(self.worker))
        if self.args:
            clauses.append("(args LIKE ? ESCAPE '\\' OR kwargs LIKE ? ESCAPE '\\')")
            params += [_like_contains(self.args)] * 2
        if self.since is not None:
            clauses.append("updated >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("updated <= ?")
            params.append(self.until)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like_prefix(text: str) -> str:
    return _escape(text.strip()) + "%"


def _like_contains(text: str) -> str:
    return "%" + _escape(text.strip()) + "%"


@dataclass
class Page:
    """One page of a search: its rows, and whether there is a next one."""

    rows: list[dict[str, Any]]
    number: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.number > 1


def search(store: HistoryStore, found: TaskFilter, page: int = 1) -> Page:
    """Tasks matching ``found``, the most recently updated first, one page of ``PAGE_SIZE``."""
    number = max(page, 1)
    where, params = found.where()
    rows = store.query(
        "SELECT id, name, state, worker, args, kwargs, received, started, runtime, updated"  # noqa: S608 - constant column names; values are bound
        f" FROM tasks{where} ORDER BY updated DESC LIMIT ? OFFSET ?",
        [*params, PAGE_SIZE + 1, (number - 1) * PAGE_SIZE],
    )
    items = [dict(r) for r in rows]
    return Page(items[:PAGE_SIZE], number, len(items) > PAGE_SIZE)


def task(store: HistoryStore, task_id: str) -> dict[str, Any] | None:
    rows = store.query("SELECT * FROM tasks WHERE id = ?", (task_id,))
    return dict(rows[0]) if rows else None


def timeline(store: HistoryStore, task_id: str) -> list[dict[str, Any]]:
    """The task's events in time order: type, timestamp, hostname, detail."""
    rows = store.query(
        "SELECT type, timestamp, hostname, detail FROM task_events WHERE task_id = ?"
        " ORDER BY timestamp, rowid",
        (task_id,),
    )
    return [dict(r) for r in rows]


@dataclass
class TreeNode:
    """One task of a workflow tree, with the tasks it sent."""

    id: str
    name: str | None
    state: str | None
    children: list[TreeNode] = field(default_factory=list)


def workflow(store: HistoryStore, row: dict[str, Any]) -> TreeNode | None:
    """The tree of the workflow ``row`` belongs to, from its root (None for a lone task)."""
    root_id = row.get("root_id") or row["id"]
    rows = store.query(
        "SELECT id, name, state, parent_id FROM tasks WHERE root_id = ? OR id = ?"
        " ORDER BY first_seen LIMIT ?",
        (root_id, root_id, MAX_TREE),
    )
    if len(rows) <= 1 and not row.get("parent_id"):
        return None
    nodes = {str(r["id"]): TreeNode(str(r["id"]), r["name"], r["state"]) for r in rows}
    root = nodes.get(root_id) or TreeNode(root_id, None, None)
    for r in rows:
        node = nodes[str(r["id"])]
        if node is root:
            continue
        parent = nodes.get(str(r["parent_id"] or "")) or root
        parent.children.append(node)
    return root


@dataclass
class Minute:
    """All task names folded into one minute of the overview."""

    minute: int
    counts: dict[str, int]
    runtime_avg: float | None
    runtime_max: float
    wait_avg: float | None
    wait_max: float


def series(store: HistoryStore, minutes: int = 60, now: float | None = None) -> list[Minute]:
    """The last ``minutes`` minutes, one point per minute (empty minutes included)."""
    end = int((time.time() if now is None else now) // 60)
    start = end - minutes + 1
    sums = ", ".join(f"sum({c})" for c in SERIES_COUNTS)
    rows = store.query(
        f"SELECT minute, {sums}, sum(runtime_sum), sum(runtime_n), max(runtime_max),"  # noqa: S608 - constant column names; values are bound
        " sum(wait_sum), sum(wait_n), max(wait_max) FROM series WHERE minute >= ?"
        " GROUP BY minute",
        (start,),
    )
    found: dict[int, Minute] = {}
    width = len(SERIES_COUNTS)
    for r in rows:
        values = list(r)
        counts = dict(zip(SERIES_COUNTS, (int(v or 0) for v in values[1 : 1 + width]), strict=True))
        rt_sum, rt_n, rt_max, w_sum, w_n, w_max = values[1 + width :]
        found[int(values[0])] = Minute(
            int(values[0]),
            counts,
            (rt_sum / rt_n) if rt_n else None,
            float(rt_max or 0.0),
            (w_sum / w_n) if w_n else None,
            float(w_max or 0.0),
        )
    empty = dict.fromkeys(SERIES_COUNTS, 0)
    return [
        found.get(m) or Minute(m, dict(empty), None, 0.0, None, 0.0) for m in range(start, end + 1)
    ]


def totals(store: HistoryStore, since: float) -> dict[str, int]:
    """Counts per event since ``since`` (a whole-minute resolution)."""
    sums = ", ".join(f"sum({c})" for c in SERIES_COUNTS)
    rows = store.query(f"SELECT {sums} FROM series WHERE minute >= ?", (int(since // 60),))  # noqa: S608 - constant column names; values are bound
    values = list(rows[0]) if rows else [0] * len(SERIES_COUNTS)
    return {c: int(v or 0) for c, v in zip(SERIES_COUNTS, values, strict=True)}


def task_names(store: HistoryStore, limit: int = 500) -> list[str]:
    """Task names seen recently (for the rate-limit form)."""
    rows = store.query(
        "SELECT DISTINCT name FROM series WHERE name != '' ORDER BY name LIMIT ?", (limit,)
    )
    return [str(r[0]) for r in rows]
