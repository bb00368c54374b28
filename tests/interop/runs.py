"""What the fleet's tasks recorded (:func:`interop.fleet_tasks.record`): one JSON line per run,
in one file per worker process."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Run:
    kind: str
    id: str
    name: str
    retries: int
    note: Any
    t: float


def read_runs(directory: Path) -> list[Run]:
    """Every whole line written so far (a line still being written is left for later), in the
    order they were written (by their time)."""
    runs: list[Run] = []
    for path in sorted(directory.glob("*.jsonl")):
        text = path.read_text(encoding="utf-8")
        for line in text.splitlines(keepends=True):
            if line.endswith("\n"):
                runs.append(Run(**json.loads(line)))
    return sorted(runs, key=lambda run: run.t)


def runs_of(directory: Path, task_id: str) -> list[Run]:
    return [run for run in read_runs(directory) if run.id == task_id]


def count_by_id(runs: list[Run]) -> Counter[str]:
    return Counter(run.id for run in runs)
