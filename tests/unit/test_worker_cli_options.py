"""The worker's and multi's command-line options in-process: sizes, pools, refusals, mistakes."""

from __future__ import annotations

import os
from pathlib import Path

import click
import pytest

from celeriac.cli.main import main
from celeriac.cli.worker_options import KiBSize, PoolName

APP_SOURCE = """
from celeriac import Celeriac
app = Celeriac("optapp", broker="sqlite:///{db}", backend="sqlite:///{db}")
"""


@pytest.fixture
def cli_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"optapp_{os.getpid()}_{tmp_path.name}".replace("-", "_")
    (tmp_path / f"{name}.py").write_text(APP_SOURCE.format(db=tmp_path / "opt.db"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out, err


@pytest.mark.parametrize(
    ("text", "kib"),
    [("200000", 200000), ("300MB", 300 * 1024), ("1.5G", 1536 * 1024), ("2048B", 2), ("1", 1)],
)
def test_memory_sizes_are_kib_as_in_celery(text: str, kib: int) -> None:
    assert KiBSize().convert(text, None, None) == kib


@pytest.mark.parametrize("text", ["lots", "-5", "0", "10XB"])
def test_a_bad_memory_size_is_a_usage_error(text: str) -> None:
    with pytest.raises(click.BadParameter):
        KiBSize().convert(text, None, None)


def test_pools_by_celerys_names() -> None:
    pool = PoolName()
    assert pool.convert("processes", None, None) == "prefork"
    assert pool.convert("threads", None, None) == "threads"
    assert pool.convert("pkg.mod:MyPool", None, None) == "pkg.mod:MyPool"
    with pytest.raises(click.BadParameter, match="no gevent pool: use -P asyncio"):
        pool.convert("gevent", None, None)
    with pytest.raises(click.BadParameter, match=r"-P threads for I/O-bound"):
        pool.convert("eventlet", None, None)
    with pytest.raises(click.BadParameter, match="'nope' is not a pool"):
        pool.convert("nope", None, None)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["-P", "gevent"], "celeriac has no gevent pool: use -P asyncio"),
        (["-n", "w1@%q"], "unknown abbreviation %q"),
        (["--pidfile", "%z.pid"], "unknown abbreviation %z"),
        (["--umask", "0999"], "--umask"),
        (["-O", "fastest"], "'fastest' is not one of 'default', 'fair'"),
        (["--max-memory-per-child", "lots"], "is not a size"),
    ],
)
def test_worker_mistakes_print_usage(
    cli_app: str, extra: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["-A", cli_app, "worker", *extra], capsys)
    assert code == 2, err
    assert needle in err
    assert "Usage:" in err
    assert "Traceback" not in out + err


def test_excluding_every_queue_is_one_line(
    cli_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["-A", cli_app, "worker", "-P", "threads", "-X", "celery"], capsys)
    assert code == 1
    assert "-X/--exclude-queues celery leaves no queue to consume" in err
    assert "Traceback" not in err


def test_uid_of_a_missing_user_is_one_line(
    cli_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["-A", cli_app, "worker", "--uid", "no-such-user-x"], capsys)
    assert code == 1
    assert "--uid: no such user 'no-such-user-x'" in err


def test_help_says_what_celeriac_does_differently(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["worker", "--help"], capsys)
    assert code == 0
    text = " ".join(out.split())
    for needle in (
        "celeriac always behaves as 'fair'",
        "celeriac workers have no gossip",
        "celeriac workers have no mingle",
        "The heartbeat that renews the leases",
        "KiB for a bare number",
        "%I to '-N'",
        "in Celery's format; worker events are always sent",
    ):
        assert needle in text


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["multi"], 0, "celeriac multi start"),
        (["multi", "help"], 0, "-o:SEL value"),
        (["multi", "launch", "w1"], 2, "unknown multi command 'launch'"),
        (["multi", "start"], 2, "name the nodes"),
        (["multi", "start", "2", "-c:3", "4"], 2, "there is no node 3"),
        (["multi", "start", "w1", "--", "x=1"], 2, "CELERIAC_<SETTING>"),
        (["multi", "show", "w1", "--pidfile=%q"], 2, "unknown abbreviation %q"),
    ],
)
def test_multi_usage(
    argv: list[str], code: int, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(argv, capsys)
    assert status == code, out + err
    assert needle in out + err
    assert "Traceback" not in out + err


def test_multi_show_names_and_get(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["-A", "proj", "multi", "show", "w1", "w2@h", "-c", "2"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2
    assert " -m celeriac -A proj worker --detach -c 2 " in lines[0]  # -A given before multi
    code, out, _ = run(["multi", "names", "w1@a", "w2@b"], capsys)
    assert out.split() == ["w1@a", "w2@b"]
    code, out, _ = run(["multi", "get", "w2@b", "w1@a", "w2@b", "-l", "INFO"], capsys)
    assert code == 0
    assert "-n w2@b" in out and "-l INFO" in out
    code, out, _ = run(["multi", "get", "w9@b", "w1@a"], capsys)
    assert code == 1
    code, out, _ = run(["multi", "expand", "%n.pid", "w1@a", "w2@b"], capsys)
    assert out.split() == ["w1.pid", "w2.pid"]
