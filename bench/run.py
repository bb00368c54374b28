"""Side-by-side benchmark of celeriac and its peers on one local Redis: ``make bench``.

The driver never imports a peer: each system runs in its own venv (bench/.venvs/<name>), its
producer side through an adapter script executed by that venv's python (bench/systems/), its
worker through its own CLI. The driver only starts and stops processes, reads a counter in Redis
and /proc, and writes bench/results/latest.{json,md,png} plus a timestamped raw JSON file.

    python bench/run.py                       # everything, default sizes (under 15 min, 2 cores)
    python bench/run.py --quick               # a small version (the test suite runs this)
    python bench/run.py --only celeriac,celery-prefork
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import shlex
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import redis  # noqa: E402
from harness import machine, procs, report, stats, venvs, workloads  # noqa: E402
from harness.systems import REDIS, SYSTEMS, System, select  # noqa: E402


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, one run")
    p.add_argument("--only", help="comma-separated systems: " + ",".join(s.name for s in SYSTEMS))
    p.add_argument("--repeats", type=int, help="runs per system (median and min-max)")
    p.add_argument("--enqueue", type=int, help="N for enqueue")
    p.add_argument("--drain", type=int, help="N for bulk and drain")
    p.add_argument("--io", type=int, help="N for io")
    p.add_argument("--roundtrip", type=int, help="sequential round trips")
    p.add_argument("--idle-seconds", type=float, help="idle CPU window")
    p.add_argument("--drain-cap", type=float, help="seconds a drain may take before it is cut")
    p.add_argument("--io-cap", type=float, help="seconds an io run may take before it is cut")
    p.add_argument("--step-timeout", type=float, help="hard limit of one step, seconds")
    p.add_argument("--redis", default=REDIS, help="Redis base URL, without the db (%(default)s)")
    p.add_argument("--results-dir", type=Path, default=BENCH / "results")
    p.add_argument(
        "--python", action="append", default=[], metavar="SYSTEM=PATH",
        help="run SYSTEM with this interpreter instead of its bench venv (tests use it)",
    )  # fmt: skip
    p.add_argument(
        "--db", action="append", default=[], metavar="SYSTEM=N", help="Redis db for SYSTEM"
    )
    return p.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> workloads.Sizes:
    base = workloads.QUICK if args.quick else workloads.Sizes()
    given = {
        "enqueue": args.enqueue, "drain": args.drain, "io": args.io,
        "roundtrip": args.roundtrip, "idle_seconds": args.idle_seconds,
        "repeats": args.repeats, "step_timeout": args.step_timeout,
        "drain_cap": args.drain_cap, "io_cap": args.io_cap,
    }  # fmt: skip
    return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})


def pairs(values: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not rest:
            raise SystemExit(f"--{what} takes SYSTEM=VALUE, not {value!r}")
        out[name] = rest
    return out


class Runner:
    """Runs the selected systems one after the other and collects one entry per system."""

    def __init__(self, args: argparse.Namespace, chosen: list[System]) -> None:
        self.args = args
        self.chosen = chosen
        self.sizes = sizes_from(args)
        self.pythons = {k: Path(v) for k, v in pairs(args.python, "python").items()}
        self.dbs = {k: int(v) for k, v in pairs(args.db, "db").items()}
        self.log_dir = args.results_dir / "logs"
        self.venv_errors: dict[str, str] = {}
        self.entries: dict[str, dict[str, Any]] = {}

    def python_for(self, system: System) -> Path:
        if system.name in self.pythons:
            return self.pythons[system.name]
        if system.venv in self.venv_errors:
            raise venvs.SetupError(self.venv_errors[system.venv])
        try:
            return venvs.ensure(system.venv, log_dir=self.log_dir)
        except venvs.SetupError as exc:
            self.venv_errors[system.venv] = str(exc)
            raise

    def context(self, system: System, python: Path) -> workloads.Context:
        return workloads.Context(
            system=system,
            python=python,
            redis_base=self.args.redis,
            db=self.dbs.get(system.name, system.db),
            sizes=self.sizes,
            log_dir=self.log_dir,
        )

    def prepare(self, system: System) -> tuple[dict[str, Any], workloads.Context | None]:
        """The system's entry and its context, or the entry alone when it cannot run (its
        venv, its probe, or a system it needs failed)."""
        entry: dict[str, Any] = {"status": "ok", "notes": system.notes, "db": system.db}
        if system.requires is not None:
            needed = self.entries.get(system.requires)
            if needed is None or needed["status"] != "ok":
                why = needed.get("reason", "") if needed else "not selected"
                return {
                    **entry,
                    "status": "skipped",
                    "reason": f"needs {system.requires} ({why})",
                }, None
        try:
            python = self.python_for(system)
        except venvs.SetupError as exc:
            return {**entry, "status": "failed", "reason": f"install: {exc}"}, None
        ctx = self.context(system, python)
        entry["db"] = ctx.db
        try:
            entry["version"] = ctx.adapter("probe", timeout=120)["version"]
        except procs.AdapterError as exc:
            status = "skipped" if system.broker == "amqp" else "failed"
            return {**entry, "status": status, "reason": str(exc)}, None
        entry["runs"] = []
        return entry, ctx

    def run_round(self, index: int, prepared: dict[str, workloads.Context]) -> None:
        """Run ``index`` of every system still in the running, one after the other."""
        for name, ctx in list(prepared.items()):
            entry = self.entries[name]
            ctx.run_index = index
            began = time.monotonic()
            try:
                entry["runs"].append(workloads.run_once(ctx))
            except Exception as exc:  # a harness fault for this system: a row, not a crash
                entry.update(status="failed", reason=f"harness: {type(exc).__name__}: {exc}")
                del prepared[name]
                print(f"{name}: failed: {entry['reason']}", flush=True)
                continue
            finally:
                procs.stop_all()
            took = time.monotonic() - began
            print(f"{name}: run {index}: {brief(entry['runs'][-1])} ({took:.0f}s)", flush=True)

    def install(self) -> None:
        """Build the needed venvs first, four at a time: pip mostly waits on the network."""
        needed = sorted({s.venv for s in self.chosen if s.name not in self.pythons})
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = {
                name: pool.submit(venvs.ensure, name, log_dir=self.log_dir) for name in needed
            }
        for name, future in futures.items():
            error = future.exception()
            if error is not None:
                self.venv_errors[name] = str(error)
                print(f"  {name}: install failed: {error}", flush=True)

    def run(self) -> dict[str, Any]:
        """Every system's runs, interleaved: run 1 of each, then run 2 of each, and so on, so
        that a machine whose speed drifts over minutes (a noisy neighbour, a thermal limit)
        spreads its drift over every system instead of handing it to whichever ran last."""
        started = dt.datetime.now().astimezone()
        self.install()
        prepared: dict[str, workloads.Context] = {}
        for system in self.chosen:
            entry, ctx = self.prepare(system)
            self.entries[system.name] = entry
            if ctx is None:
                print(f"{system.name}: {entry['status']}: {entry['reason']}", flush=True)
            else:
                prepared[system.name] = ctx
        for index in range(1, self.sizes.repeats + 1):
            self.run_round(index, prepared)
        for name, ctx in prepared.items():
            entry = self.entries[name]
            entry["summary"] = stats.summarize(entry["runs"])
            redis.Redis.from_url(ctx.redis_url).flushdb()
        return {
            "started_at": started.isoformat(timespec="seconds"),
            "finished_at": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": command_line(),
            "machine": machine.describe(f"{self.args.redis}/0", sys.executable),
            "sizes": dataclasses.asdict(self.sizes),
            "metrics": {m.key: {"label": m.label, "unit": m.unit} for m in stats.METRICS},
            "systems": self.entries,
        }


HEADLINES = (
    ("enqueue", "per_s"), ("bulk", "per_s"), ("drain", "per_s"),
    ("roundtrip", "p50_ms"), ("io", "per_s"), ("idle", "cpu_pct"),
)  # fmt: skip


def brief(run: dict[str, Any]) -> str:
    """One progress line: each workload's headline figure, or that it failed."""
    parts = []
    for workload, key in HEADLINES:
        step = run.get(workload, {})
        parts.append(f"{workload} " + (f"{step[key]:,.1f}" if key in step else "FAILED"))
    return ", ".join(parts)


def command_line() -> str:
    """What reproduces this run, as the user would type it."""
    args = sys.argv[1:]
    return "python bench/run.py " + shlex.join(args) if args else "make bench"


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        chosen = select(args.only)
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    try:
        redis.Redis.from_url(f"{args.redis}/0", socket_timeout=5).ping()
    except redis.RedisError as exc:
        print(f"bench: Redis is not answering at {args.redis}: {exc}", file=sys.stderr)
        return 2
    try:
        (args.results_dir / "logs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"bench: cannot write results to {args.results_dir}: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    try:
        result = Runner(args, chosen).run()
    finally:
        procs.stop_all()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.results_dir
    report.write_json(result, out / "latest.json", out / f"raw-{stamp}.json")
    table = report.markdown(result)
    (out / "latest.md").write_text(table)
    why_not = report.chart(result, out / "latest.png")
    print("\n" + table)
    print(f"wrote {out / 'latest.json'}, {out / 'latest.md'}"
          + (f"; no chart: {why_not}" if why_not else f", {out / 'latest.png'}"))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
