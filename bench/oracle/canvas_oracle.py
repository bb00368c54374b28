"""Celery 5.7 as an oracle for celeriac's canvas: the same workflows on both, side by side.

For each system in turn: FLUSHDB of Redis db 12, start its worker (threads pool, concurrency 4)
in a session of its own, run every scenario of :mod:`scenarios` in a fresh process of that
system's venv with a timeout (a scenario that outlives it is reported as hung, and killed), then
stop the worker's whole process group, also when something failed on the way. The driver never
imports Celery or celeriac: it only starts processes and compares the JSON they print, so it
runs in any venv that has redis-py.

    .venv/bin/python bench/oracle/canvas_oracle.py [--only NAME,NAME] [--systems celery,celeriac]

Prints a markdown table (scenario, Celery, celeriac, match) and writes it, with the raw
observations, to ``bench/oracle/results/latest.{md,json}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
ROOT = BENCH.parent
RESULTS = HERE / "results"
LOGS = HERE / "logs"
REDIS_URL = "redis://127.0.0.1:6379/12"
MARK = "ORACLE-RESULT "
SENTINEL = "oracle:sentinel"
STARTUP = 20.0
"""Slack over a scenario's own budget for its process: interpreter start and imports."""


@dataclass(frozen=True)
class System:
    name: str
    python: Path
    worker: list[str]


def systems() -> dict[str, System]:
    """Celery from the benchmark's venv (built on first use), celeriac from the project's."""
    sys.path.insert(0, str(BENCH))
    from harness import venvs  # the benchmark's own venv builder, not a copy of it

    celery_python = venvs.ensure("celery")
    celeriac_python = ROOT / ".venv" / "bin" / "python"
    pool = ["-P", "threads", "-c", "4", "-l", "WARNING"]
    return {
        "celery": System(
            "celery",
            celery_python,
            [str(celery_python.parent / "celery"), "-A", "oracle_celery_app", "worker", *pool],
        ),
        "celeriac": System(
            "celeriac",
            celeriac_python,
            [
                str(celeriac_python.parent / "celeriac"),
                "-A",
                "oracle_celeriac_app",
                "worker",
                *pool,
            ],
        ),
    }


def scenario_names() -> list[str]:
    """The scenarios in file order, read without importing Celery or celeriac."""
    sys.path.insert(0, str(HERE))
    import scenarios

    return [name for name in scenarios.SCENARIOS if not name.startswith("_")]


def budget_of(name: str) -> float:
    import scenarios

    return scenarios.BUDGETS[name]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(HERE)
    env["ORACLE_REDIS_URL"] = REDIS_URL
    env.pop("VIRTUAL_ENV", None)
    return env


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """TERM to the process group, KILL after ``grace``: a worker's threads and children too."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # the leader may exit before its children
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def worker(system: System) -> Iterator[None]:
    LOGS.mkdir(exist_ok=True)
    log = (LOGS / f"{system.name}-worker.log").open("wb")
    proc = subprocess.Popen(
        system.worker,
        cwd=HERE,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield
    finally:
        _kill_group(proc, grace=5.0)
        log.close()


def run_one(system: System, name: str, budget: float) -> dict[str, Any]:
    """One scenario in a fresh process; ``{"value"}``, ``{"error"}`` or ``{"hung"}``."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(system.python), str(HERE / "run_scenario.py"), system.name, name],
        cwd=HERE,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=budget + STARTUP)
    except subprocess.TimeoutExpired:
        _kill_group(proc, grace=1.0)
        return {"hung": f"hung after {time.monotonic() - started:.0f} s (process killed)"}
    finally:
        if proc.poll() is None:
            _kill_group(proc, grace=1.0)
    for line in out.decode(errors="replace").splitlines():
        if line.startswith(MARK):
            outcome: dict[str, Any] = json.loads(line[len(MARK) :])
            return outcome
    tail = " | ".join(err.decode(errors="replace").strip().splitlines()[-3:])
    return {"error": f"no result line (exit {proc.returncode}): {tail}"}


def shown(outcome: dict[str, Any]) -> str:
    if "value" in outcome:
        return json.dumps(outcome["value"], sort_keys=True)
    return str(outcome.get("error") or outcome.get("hung"))


def run_guarded(system: System, name: str, client: redis.Redis) -> dict[str, Any]:
    """One scenario, run again once if db 12 was emptied under it by someone else.

    On this shared machine other processes restart Redis (the broker-restart tests) or write to
    db 12 (the benchmark adapters' default): the chords in flight lose their counters and seem
    to hang. A sentinel key, set before each run, tells such a run apart from a real hang.
    """
    outcome: dict[str, Any] = {}
    for _ in range(2):
        client.set(SENTINEL, "1")
        outcome = run_one(system, name, budget_of(name))
        if client.exists(SENTINEL):
            return outcome
        print(f"  {name}: db 12 was emptied by another process during the run; again", flush=True)
    return {"error": "interfered: db 12 emptied by another process twice"}


def run_system(system: System, names: list[str]) -> dict[str, dict[str, Any]]:
    client = redis.Redis.from_url(REDIS_URL)
    print(f"== {system.name}: worker {' '.join(system.worker[1:])}", flush=True)
    observed: dict[str, dict[str, Any]] = {}
    try:
        client.flushdb()
        with worker(system):
            warm = run_one(system, "_warmup", budget_of("_warmup"))
            if warm.get("value") != 1:
                message = f"worker did not answer: {shown(warm)}"
                return {name: {"error": message} for name in names}
            for name in names:
                observed[name] = run_guarded(system, name, client)
                print(f"  {name:<40} {shown(observed[name])[:100]}", flush=True)
    finally:
        client.close()
    return observed


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(names: list[str], results: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = ["| scenario | Celery 5.7 | celeriac | match |", "| --- | --- | --- | --- |"]
    for name in names:
        celery = results.get("celery", {}).get(name, {"error": "not run"})
        celeriac = results.get("celeriac", {}).get(name, {"error": "not run"})
        match = "yes" if shown(celery) == shown(celeriac) else "**no**"
        lines.append(f"| {name} | {cell(shown(celery))} | {cell(shown(celeriac))} | {match} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated scenario names (default: all)")
    parser.add_argument("--systems", default="celery,celeriac", help="which systems to run")
    args = parser.parse_args()
    names = scenario_names()
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            parser.error(f"unknown scenarios: {', '.join(unknown)}")
        names = [name for name in names if name in wanted]
    known = systems()
    results = {name: run_system(known[name], names) for name in args.systems.split(",")}
    report = table(names, results)
    print()
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(report + "\n")
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    mismatches = sum(1 for line in report.splitlines() if line.endswith("| **no** |"))
    print(f"\n{len(names) - mismatches} of {len(names)} scenarios match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
