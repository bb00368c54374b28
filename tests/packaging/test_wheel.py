"""The package as a user gets it: ``python -m build`` makes an sdist and a wheel (the wheel from
the sdist, so the sdist must hold everything the wheel needs), the wheel installs into a fresh
venv, and from there ``celeriac --version``, a one-task round trip through a worker process and
the typing marker (mypy reads the installed package's annotations) all work.

One build and one venv serve the whole module (about 20 s together; most of it is ``build``
installing setuptools into its isolated environments).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Mapping
from configparser import ConfigParser
from dataclasses import dataclass
from pathlib import Path
from textwrap import dedent

import pytest

from celeriac.testing import WorkerProcess

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]
#: What the sdist is made from besides src/: setuptools adds these (readme, licence files).
TOP_FILES = ("pyproject.toml", "README.md", "LICENSE", "LICENSE.txt", "LICENSE.md")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what would let a child see the checkout instead of what it
    installed (PYTHONPATH, MYPYPATH, the test venv) or change its settings (CELERIAC_*)."""
    drop = {"PYTHONPATH", "MYPYPATH", "VIRTUAL_ENV", "PYTHONHOME"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("CELERIAC_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def run(args: list[str], cwd: Path, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=cwd,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def checked(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"$ {' '.join(map(str, result.args))}\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def tracked_sources() -> list[Path]:
    """The files the sdist is made from, as a fresh checkout has them (tracked by git, so no
    stray build output or another engineer's untracked file gets in)."""
    listed = run(["git", "ls-files", "-z", "--", "src", *TOP_FILES], ROOT, timeout=30)
    names = [n for n in listed.stdout.split("\0") if n] if listed.returncode == 0 else []
    if not names:  # not a git checkout: the source tree without caches
        names = [
            str(p.relative_to(ROOT))
            for p in (ROOT / "src").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and ".egg-info" not in str(p)
        ]
        names += [name for name in TOP_FILES if (ROOT / name).exists()]
    return [Path(name) for name in names if (ROOT / name).is_file()]


@dataclass(frozen=True)
class Built:
    wheel: Path
    sdist: Path
    sources: list[Path]
    seconds: float


@dataclass(frozen=True)
class Venv:
    root: Path
    python: Path
    bin: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """``python -m build`` on a copy of the tracked sources: the sdist, then the wheel from it."""
    import shutil
    import time

    source = tmp_path_factory.mktemp("source")
    sources = tracked_sources()
    for name in sources:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    started = time.monotonic()
    checked(run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)], source))
    seconds = time.monotonic() - started
    print(f"python -m build: sdist and wheel in {seconds:.1f} s")  # shown with -s / -rP
    (wheel,) = dist.glob("celeriac-*.whl")
    (sdist,) = dist.glob("celeriac-*.tar.gz")
    return Built(wheel, sdist, sources, seconds)


@pytest.fixture(scope="module")
def venv(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A fresh venv (no pip of its own) with the wheel installed by this venv's pip, its
    dependencies from the package index."""
    root = tmp_path_factory.mktemp("venv")
    checked(run([sys.executable, "-m", "venv", "--without-pip", str(root)], root))
    python = root / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    checked(run([*install, "--disable-pip-version-check", str(built.wheel)], root))
    return Venv(root, python, root / "bin")


def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_the_wheel_holds_every_package_file_and_the_sdist_what_the_wheel_needs(
    built: Built,
) -> None:
    in_wheel = wheel_names(built.wheel)
    package_files = {str(p.relative_to("src")) for p in built.sources if p.parts[0] == "src"}
    missing = sorted(package_files - in_wheel)
    assert not missing, f"tracked under src/ but not in the wheel (package-data?): {missing}"
    for data in ("celeriac/py.typed", "celeriac/dashboard/static/app.js"):
        assert data in in_wheel
    assert any(n.startswith("celeriac/dashboard/templates/") for n in in_wheel)

    with tarfile.open(built.sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    wheel_package = {n for n in in_wheel if not n.startswith(f"celeriac-{VERSION}.dist-info")}
    assert not sorted(f"src/{n}" for n in wheel_package if f"src/{n}" not in in_sdist)
    assert "pyproject.toml" in in_sdist and "README.md" in in_sdist


def test_the_wheel_declares_the_entry_points_pyproject_does(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as archive:
        text = archive.read(f"celeriac-{VERSION}.dist-info/entry_points.txt").decode()
    parser = ConfigParser(delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    in_wheel = {section: dict(parser[section]) for section in parser.sections()}
    declared: dict[str, Mapping[str, str]] = {"console_scripts": PROJECT["scripts"]}
    declared.update(PROJECT.get("entry-points", {}))
    for group, points in declared.items():
        for name, value in points.items():
            assert in_wheel.get(group, {}).get(name) == value, (group, name, in_wheel)


def test_celeriac_version_runs_from_the_fresh_venv(venv: Venv) -> None:
    out = checked(run([str(venv.bin / "celeriac"), "--version"], venv.root))
    assert out.strip() == f"celeriac, version {VERSION}"
    where = checked(
        run([str(venv.python), "-c", "import celeriac; print(celeriac.__file__)"], ROOT)
    )
    # run from the checkout, still the installed copy: nothing of src/ leaks in
    assert Path(where.strip()).is_relative_to(venv.root), where


def test_a_task_goes_round_trip_through_a_worker_from_the_fresh_venv(
    venv: Venv, tmp_path: Path
) -> None:
    (tmp_path / "proj_tasks.py").write_text(
        dedent(
            """
            from celeriac import Celeriac

            app = Celeriac("proj", broker="sqlite:///broker.db", backend="sqlite:///broker.db")


            @app.task
            def add(x: int, y: int) -> int:
                return x + y
            """
        )
    )
    command = [str(venv.bin / "celeriac"), "-A", "proj_tasks", "worker"]
    worker = WorkerProcess(
        [*command, "-P", "threads", "-c", "1", "-l", "info"], clean_env(), str(tmp_path)
    )
    try:
        worker.wait_for(r"ready: pool=threads", timeout=30)
        client = "from proj_tasks import add; print(add.delay(2, 3).get(timeout=30))"
        answer = checked(run([str(venv.python), "-c", client], tmp_path, timeout=60))
    finally:
        status = worker.stop()
    assert answer.strip() == "5"
    assert status == 0, worker.output()  # a warm shutdown


WHERE = "import celeriac; print(celeriac.__file__)"

USER_CODE = """
from celeriac import Celeriac

app = Celeriac("proj", broker="sqlite:///broker.db")


@app.task
def add(x: int, y: int) -> int:
    return x + y


{call}
"""


def test_mypy_reads_the_installed_types_and_rejects_a_wrong_delay(
    venv: Venv, tmp_path: Path
) -> None:
    """The ``py.typed`` marker at work: mypy, pointed at the fresh venv, reads the annotations
    of the installed package and checks ``.delay()`` against the task's signature."""
    (tmp_path / "bad.py").write_text(USER_CODE.format(call='add.delay("two", y=[])'))
    (tmp_path / "good.py").write_text(
        USER_CODE.format(call="total: int = add.delay(2, y=3).get(timeout=1)")
    )
    mypy = [sys.executable, "-m", "mypy", "--python-executable", str(venv.python), "--strict"]
    mypy += ["--cache-dir", str(tmp_path / ".mypy_cache")]
    bad = run([*mypy, "bad.py"], tmp_path)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert (
        'bad.py:12: error: Argument 1 to "delay" of "Task" has incompatible type "str"; '
        'expected "int"' in bad.stdout
    ), bad.stdout
    assert 'Argument "y" to "delay" of "Task"' in bad.stdout
    good = run([*mypy, "-v", "good.py"], tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    installed = venv.root / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    assert f"{installed}/site-packages/celeriac/" in good.stderr  # read from the venv, not src/
