"""``celeriac events --json`` (and Celery's ``--dump``) against a real worker on SQLite: one event
per line as JSON, a heartbeat asked of every worker as it starts listening (as ``celery events``
does), ended by Ctrl-C, ``--limit`` or ``--timeout`` with status 0; mistakes print usage, not a
traceback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from events_brokers import Broker, open_broker
from worker_harness import WorkerProcess, start_cli_worker, wait_until

TIMEOUT = 15.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with open_broker("sqlite", tmp_path) as found:
        yield found


def events_cli(broker: Broker, tmp_path: Path, *args: str) -> WorkerProcess:
    argv = [sys.executable, "-m", "celeriac", "-A", "apps.events_tasks", "events", *args]
    return WorkerProcess(argv, broker.env(), tmp_path)


def lines(process: WorkerProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in list(process.stdout_lines) if line.strip()]


def test_json_prints_each_event_of_a_live_worker_on_its_own_line(
    broker: Broker, tmp_path: Path
) -> None:
    hostname = f"cli{uuid.uuid4().hex[:6]}@itest"
    worker = start_cli_worker("apps.events_tasks", broker.env(), tmp_path, "-E", "-n", hostname)
    cli = events_cli(broker, tmp_path, "--json")
    app = broker.app()
    try:
        wait_until(
            lambda: any(e["type"] == "worker-heartbeat" for e in lines(cli)),
            TIMEOUT,
            "a heartbeat line (the CLI asks for one as it starts listening)",
        )
        task_id = app.send_task("ev.add", (2, 3)).id
        wait_until(
            lambda: any(
                e.get("uuid") == task_id and e["type"] == "task-succeeded" for e in lines(cli)
            ),
            TIMEOUT,
            "the task's events",
        )
        cli.send(signal.SIGINT)
        assert cli.wait_exit(TIMEOUT) == 0, cli.output()
        events = lines(cli)
        assert [e["type"] for e in events if e.get("uuid") == task_id] == [
            "task-received",
            "task-started",
            "task-succeeded",
        ]
        assert all(e["hostname"] == hostname and "local_received" in e for e in events)
        # asked for at once by the CLI (Celery's wakeup): the heartbeat command's freq 5
        assert any(e["type"] == "worker-heartbeat" and e["freq"] == 5 for e in events)
        assert "Traceback" not in cli.stderr()
    finally:
        cli.stop()
        worker.stop()
        app.close()


def test_dump_is_json_too_and_limit_ends_it(broker: Broker, tmp_path: Path) -> None:
    worker = start_cli_worker("apps.events_tasks", broker.env(), tmp_path)  # no -E
    cli = events_cli(broker, tmp_path, "--dump", "--limit", "1")
    try:
        assert cli.wait_exit(TIMEOUT) == 0, cli.output()
        assert [e["type"] for e in lines(cli)] == ["worker-heartbeat"]
    finally:
        cli.stop()
        worker.stop()


def test_timeout_ends_it_when_no_event_comes(broker: Broker, tmp_path: Path) -> None:
    cli = events_cli(broker, tmp_path, "--json", "--timeout", "0.3")
    try:
        assert cli.wait_exit(TIMEOUT) == 0, cli.output()
        assert lines(cli) == []
    finally:
        cli.stop()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["events", "--limit", "0"], "Invalid value for '--limit'"),
        (["events", "--timeout", "-1"], "Invalid value for '--timeout'"),
        (["events", "--nope"], "No such option '--nope'"),
    ],
)
def test_a_mistake_prints_usage_not_a_traceback(
    broker: Broker, tmp_path: Path, args: list[str], says: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "celeriac", "-A", "apps.events_tasks", *args],
        env=broker.env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert says in done.stderr and "Usage:" in done.stderr
    assert "Traceback" not in done.stderr


def test_without_an_app_or_a_broker_it_says_what_it_needs(broker: Broker, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "celeriac", "events", "--json"],
        env=broker.env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "needs an app" in done.stderr and "Traceback" not in done.stderr
