"""One virtual environment per system under bench/.venvs/<name>, from bench/requirements/.

The peers' pins conflict with each other (and must never become celeriac's dependencies), so
each gets its own venv. A venv is rebuilt only when its requirements change: a stamp holds the
hash of the requirements file (and, for celeriac, of pyproject.toml, since it is installed
editable from the repo). A failed install raises :class:`SetupError` with the end of pip's log,
which the driver turns into a failure row.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
VENVS = BENCH / ".venvs"
REQUIREMENTS = BENCH / "requirements"
STAMP = ".bench-stamp"
INSTALL_TIMEOUT = 900.0


class SetupError(RuntimeError):
    """A venv could not be created or its requirements installed."""


def _fingerprint(name: str) -> str:
    digest = hashlib.sha256((REQUIREMENTS / f"{name}.txt").read_bytes())
    if name == "celeriac":
        digest.update((ROOT / "pyproject.toml").read_bytes())
    return digest.hexdigest()


def python_of(name: str) -> Path:
    return VENVS / name / "bin" / "python"


def _run(argv: list[str], log: Path) -> None:
    with log.open("ab") as out:
        try:
            done = subprocess.run(
                argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            raise SetupError(f"{' '.join(argv[:4])} timed out; see {log}") from None
    if done.returncode != 0:
        lines = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise SetupError(f"{' '.join(argv[2:5])} failed: {' | '.join(lines)} (log: {log})")


def ensure(name: str, base_python: str = sys.executable, log_dir: Path = VENVS) -> Path:
    """The venv's python, creating or updating the venv first if its requirements changed."""
    python = _install(name, base_python, log_dir)
    if name == "celeriac":
        _compile_source(python)
    return python


def _compile_source(python: Path) -> None:
    """Byte-compile celeriac's source, as a regular ``pip install`` does for every peer.

    celeriac is installed editable from ``src/``, so nothing compiled it; where the environment
    sets ``PYTHONDONTWRITEBYTECODE`` (this workplace's shells do), every worker, prefork child
    and producer would compile it again at start-up (30-40 ms each), a handicap no user has.
    Run on every call: the source changes between runs, and unchanged files are skipped.
    """
    done = subprocess.run(
        [str(python), "-m", "compileall", "-q", str(ROOT / "src")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
    )
    if done.returncode != 0:
        raise SetupError(f"compiling celeriac's source failed: {done.stdout[-300:]}")


def _install(name: str, base_python: str, log_dir: Path) -> Path:
    venv = VENVS / name
    stamp = venv / STAMP
    wanted = _fingerprint(name)
    if stamp.exists() and stamp.read_text().strip() == wanted and python_of(name).exists():
        return python_of(name)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"install-{name}.log"
    log.write_text("")
    print(f"  installing {name} into {venv} (log: {log})", flush=True)
    if not python_of(name).exists():
        _run([base_python, "-m", "venv", str(venv)], log)
    pip = [str(python_of(name)), "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "install", "--quiet", "--upgrade", "pip"], log)
    _run([*pip, "install", "--quiet", "-r", str(REQUIREMENTS / f"{name}.txt")], log)
    stamp.write_text(wanted + "\n")
    return python_of(name)
