"""``celeriac inspect``, ``control`` and ``status`` in-process, against a worker running in a thread
on the memory broker: Celery's output and exit statuses, usage (never a traceback) on mistakes."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from celeriac.cli.main import main
from celeriac.cli.remote import EX_UNAVAILABLE, NO_REPLY
from celeriac.testing import worker_thread

APP_SOURCE = """
from celeriac import Celeriac
app = Celeriac("remoteapp", broker="memory://{name}", backend="memory://{name}")

@app.task(name="r.add")
def add(x, y):
    return x + y
"""


@pytest.fixture
def remote_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, ModuleType]]:
    name = f"remoteapp_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(APP_SOURCE.format(name=name))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(name)
    yield name, module
    module.app.control.close()
    module.app.close()
    sys.modules.pop(name, None)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out, err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["inspect", "nosuch"], "Command nosuch not recognized. Available inspect commands:"),
        (["control", "ping"], "Available control commands:"),
        (["control", "rate_limit", "r.add"], "takes arguments: <task_name> <rate_limit"),
        (["control", "pool_grow", "many"], "argument n"),
        (["control", "revoke"], "needs at least one task id"),
        (["inspect", "ping", "extra"], "takes arguments"),
        (["status", "-t", "-1"], "-t"),
    ],
)
def test_mistakes_print_usage_not_a_traceback(
    remote_app: tuple[str, ModuleType],
    argv: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, _ = remote_app
    code, out, err = run(["-A", name, *argv], capsys)
    assert code == 2
    assert needle in err and "Usage:" in err
    assert "Traceback" not in out + err


def test_list_shows_the_commands_with_their_arguments(
    remote_app: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    name, _ = remote_app
    code, out, _ = run(["-A", name, "control", "--list"], capsys)
    assert code == 0
    assert "rate_limit <task_name> <rate_limit" in out and "shutdown" in out
    code, out, _ = run(["-A", name, "inspect", "--list"], capsys)
    assert code == 0 and "active_queues" in out and "hello" not in out


def test_no_worker_means_exit_69_and_celerys_line(
    remote_app: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    name, _ = remote_app
    for argv in (["status", "-t", "0.1"], ["inspect", "active", "-t", "0.1"]):
        code, out, err = run(["-A", name, *argv], capsys)
        assert (code, out) == (EX_UNAVAILABLE, "")
        assert NO_REPLY in err and "Traceback" not in err


def test_replies_printed_as_celery_prints_them(
    remote_app: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    name, module = remote_app
    with worker_thread(module.app, hostname="w@h"):
        code, out, _ = run(["-A", name, "status"], capsys)
        assert (code, out) == (0, "-> w@h: OK\n\n1 node online.\n")
        code, out, _ = run(["-A", name, "status", "-d", "w@h", "--json"], capsys)
        assert (code, json.loads(out)) == (0, {"w@h": {"ok": "pong"}})
        code, out, _ = run(["-A", name, "inspect", "registered", "-d", "w@h"], capsys)
        assert (code, out) == (0, "-> w@h: OK\n    * r.add\n\n1 node online.\n")
        code, out, _ = run(["-A", name, "inspect", "active", "-d", "w@h"], capsys)
        assert "- empty -" in out
        code, out, _ = run(
            ["-A", name, "control", "rate_limit", "r.add", "5/s", "-d", "w@h"], capsys
        )
        assert (code, out) == (0, "-> w@h: OK\n        new rate limit set successfully\n")
        code, out, _ = run(
            ["-A", name, "control", "rate_limit", "no.such", "5/s", "-d", "w@h"], capsys
        )
        assert (code, out) == (1, "-> w@h: ERROR\n        unknown task\n")
        code, out, _ = run(
            ["-A", name, "control", "revoke", "a", "b", "-d", "w@h", "--json"], capsys
        )
        assert json.loads(out) == [{"w@h": {"ok": "tasks {'a', 'b'} flagged as revoked"}}]
        code, out, _ = run(["-A", name, "inspect", "stats", "-d", "w@h", "--json"], capsys)
        stats = json.loads(out)["w@h"]
        assert stats["pool"]["max-concurrency"] == 2 and stats["broker"]["transport"] == "memory"
