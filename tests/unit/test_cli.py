"""The CLI in-process: usage on mistakes (never a traceback), call/result/purge/dlq on SQLite."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac.cli.main import main

APP_SOURCE = """
from celeriac import Celeriac
app = Celeriac("cliapp", broker="sqlite:///{db}", backend="sqlite:///{db}")

@app.task
def add(x: int, y: int) -> int:
    return x + y
"""


@pytest.fixture
def cli_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"cliapp_{os.getpid()}_{tmp_path.name}".replace("-", "_")
    (tmp_path / f"{name}.py").write_text(APP_SOURCE.format(db=tmp_path / "cli.db"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out, err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--version"], capsys)
    assert code == 0
    assert "celeriac, version" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["worker"], "needs an app"),
        (["-A", "no_such_module_xyz", "worker"], "cannot import 'no_such_module_xyz'"),
        (["nosuchcommand"], "No such command"),
    ],
)
def test_mistakes_print_usage_not_traceback(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2
    assert needle in err
    assert "Usage:" in err
    assert "Traceback" not in out + err


def test_bad_option_value(cli_app: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["-A", cli_app, "worker", "-c", "zero"], capsys)
    assert code == 2
    assert "'zero' is not a valid integer" in err
    assert "Traceback" not in err


def test_bad_setting_is_one_line(cli_app: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["-A", cli_app, "-b", "bogus://x", "purge", "-f"], capsys)
    assert code == 1
    assert "unknown scheme 'bogus'" in err
    assert "Traceback" not in err


def test_call_then_purge_then_result(cli_app: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["-A", cli_app, "call", f"{cli_app}.add", "--args", "[2, 3]"], capsys)
    assert code == 0
    task_id = out.strip()
    assert len(task_id) == 36
    code, out, _ = run(["-A", cli_app, "result", task_id], capsys)
    assert (code, out.strip()) == (0, "PENDING: None")
    code, out, _ = run(["-A", cli_app, "purge", "-f"], capsys)
    assert (code, out.strip()) == (0, "Purged 1 message from celery.")
    code, out, _ = run(["-A", cli_app, "dlq"], capsys)
    assert code == 0
    assert "celery: 0 dead letters" in out


def test_call_rejects_bad_json(cli_app: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["-A", cli_app, "call", "x", "--args", "{nope"], capsys)
    assert code == 2
    assert "not valid JSON" in err
