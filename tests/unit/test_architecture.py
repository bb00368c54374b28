"""The architecture as a checked fact: the import contracts have teeth, docs/architecture.md places
every layer they name, and the README's and the docs' links stay inside the repository.

``make lint`` runs ``lint-imports`` on the tree itself; these tests check the checker: an import
added on purpose up a layer fails it, with a message naming both modules.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _layer_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["type"] == "layers"]
    names: list[str] = []
    for layer in layers:
        for part in re.split(r"[|:]", layer):
            names.append(part.strip().strip("()"))
    return names


def _copy_of_the_package(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "src" / "celeriac",
        tmp_path / "src" / "celeriac",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return tmp_path / "src" / "celeriac"


def _lint_imports(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_copy_is_what_lint_imports_reads(tmp_path: Path) -> None:
    """The baseline for the tests below: the unchanged copy keeps every contract."""
    _copy_of_the_package(tmp_path)
    result = _lint_imports(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        # a transport reaching for the worker: the lower module, then the higher one
        (
            "routing/__init__.py",
            "from celeriac.worker import state",
            "celeriac.routing -> celeriac.worker.state",
        ),
        # the back edge issue 12 removed: the prefork pool taking the CLI's log format
        (
            "worker/pools/prefork.py",
            "from celeriac.cli import main",
            "celeriac.worker.pools.prefork -> celeriac.cli.main",
        ),
        # hidden in a function is still an import
        (
            "canvas/flow.py",
            "def _late() -> None:\n    from celeriac.worker import executor_gone  # noqa",
            "celeriac.canvas.flow -> celeriac.worker.executor_gone",
        ),
    ],
)
def test_an_import_up_a_layer_fails_naming_both_modules(
    tmp_path: Path, module: str, line: str, expected: str
) -> None:
    package = _copy_of_the_package(tmp_path)
    if "executor_gone" in line:
        (package / "worker" / "executor_gone.py").write_text("")
    target = package / module
    target.write_text(target.read_text() + "\n\n" + line + "\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "Layers: a module imports only from its own layer" in result.stdout
    assert expected in result.stdout, result.stdout


def test_a_module_without_a_layer_fails(tmp_path: Path) -> None:
    """The layers contract is exhaustive: a new top-level module must be given a place."""
    package = _copy_of_the_package(tmp_path)
    (package / "newcomer.py").write_text('"""Not placed in any layer yet."""\n')
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "celeriac.newcomer" in result.stdout + result.stderr


def test_importing_the_package_root_from_inside_fails(tmp_path: Path) -> None:
    package = _copy_of_the_package(tmp_path)
    target = package / "utils" / "urls.py"
    target.write_text(target.read_text() + "\nimport celeriac  # noqa\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "celeriac.utils.urls -> celeriac (l." in result.stdout


def test_click_outside_the_command_line_fails(tmp_path: Path) -> None:
    package = _copy_of_the_package(tmp_path)
    target = package / "app" / "loader.py"
    target.write_text(target.read_text() + "\nimport click  # noqa\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "celeriac.app.loader -> click" in result.stdout


def test_the_architecture_doc_places_every_layer_of_the_contract() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    diagram = doc.split("```", 2)[1]  # the first fenced block: the layers, highest first
    placed = re.findall(r"^ (\S[^ ]*(?: [|:] \S+)*)", diagram, flags=re.M)
    in_diagram = {name.strip("*") for row in placed for name in re.split(r" [|:] ", row)}
    missing = [name for name in _layer_modules() if name not in in_diagram]
    assert not missing, f"layers in pyproject.toml but not in docs/architecture.md: {missing}"


_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


DOCUMENTS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("docs/**/*.md"))]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_links_resolve_inside_the_repository(document: str) -> None:
    path = ROOT / document
    text = path.read_text()
    assert "../shared" not in text, f"{document} points outside the repository"
    checked = 0
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a web address or an anchor in the same page
        resolved = (path.parent / target.split("#", 1)[0]).resolve()
        assert resolved.is_relative_to(ROOT), f"{document}: {target} leaves the repository"
        assert resolved.exists(), f"{document}: {target} does not exist"
        checked += 1
    if document == "README.md":
        assert checked >= 2  # the chart and docs/architecture.md, at least
