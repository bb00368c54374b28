"""The suite's own rules (tests/suite_rules.py) have teeth: a skip for want of a server or a tool
fails where services are required, a by-design skip stays a skip, a forked child that raises
never reports into pytest; and every ``os.fork()`` in the tests ends its child with
``os._exit`` whatever happens (read from the source, so a new fork is checked before it runs).
"""

from __future__ import annotations

import ast
import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
#: Test helpers shipped in the package: they fork for tests too.
SRC_HELPERS = [ROOT / "src" / "celeriac" / "testing.py", ROOT / "src" / "celeriac" / "contrib"]

USER_TESTS = """
import os

import pytest

def test_a_missing_tool() -> None:
    pytest.skip("redis-server is not installed (a Redis of the test's own)")

@pytest.mark.skip(reason="no leases on this broker: a delivery is held until settled")
def test_by_design() -> None:
    pass

def test_a_child_that_raises() -> None:
    pid = os.fork()
    if pid == 0:
        raise RuntimeError("the child escapes its branch")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 70
"""

MODULE_SKIP = """
import pytest

pytest.importorskip("no_such_module_celeriac_rules")

def test_never() -> None:
    pass
"""


#: An inner run with the rules' plugin; -s so that a forked child's last words reach stderr.
PYTEST = [sys.executable, "-m", "pytest", "-p", "suite_rules", "-p", "no:cacheprovider", "-q", "-s"]


def run_with_rules(tmp_path: Path, require: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    (tmp_path / "test_module_skip.py").write_text(MODULE_SKIP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env["CELERIAC_REQUIRE_SERVICES"] = "1" if require else "0"
    return subprocess.run(
        [*PYTEST, "--continue-on-collection-errors"],  # the module's error, then the others
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_under_required_services_only_by_design_skips_stay(tmp_path: Path) -> None:
    done = run_with_rules(tmp_path, require=True)
    summary = done.stdout.strip().splitlines()[-1]
    assert "1 failed, 1 passed, 1 skipped, 1 error" in summary, done.stdout + done.stderr
    assert "skipped under CELERIAC_REQUIRE_SERVICES=1: redis-server is not installed" in done.stdout
    assert "no_such_module_celeriac_rules" in done.stdout
    assert "a forked child came back into pytest; ended" in done.stderr


def test_without_required_services_skips_are_skips(tmp_path: Path) -> None:
    done = run_with_rules(tmp_path, require=False)
    summary = done.stdout.strip().splitlines()[-1]
    assert "1 passed, 3 skipped" in summary, done.stdout + done.stderr


def _is_os_call(node: ast.AST, name: str) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == name
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "os"
    )


def _ends_with_exit(branch: list[ast.stmt]) -> bool:
    """The child's branch: a lone ``os._exit(...)``, or constant assignments then a ``try``
    whose ``finally`` calls ``os._exit`` (so no exception can carry the child further)."""
    if (
        len(branch) == 1
        and isinstance(branch[0], ast.Expr)
        and _is_os_call(branch[0].value, "_exit")
    ):
        return True
    *before, last = branch
    settled = all(isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant) for s in before)
    return (
        settled
        and isinstance(last, ast.Try)
        and any(_is_os_call(n, "_exit") for s in last.finalbody for n in ast.walk(s))
    )


def _child_branches(tree: ast.AST) -> tuple[list[int], list[int]]:
    """Lines of ``os.fork()`` calls, and of those whose child branch is ``if <pid> == 0:``
    right after ``<pid> = os.fork()`` and ends as :func:`_ends_with_exit` says."""
    forks = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and _is_os_call(n, "fork")]
    safe: list[int] = []
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for first, second in itertools.pairwise(body):
            if not (
                isinstance(first, ast.Assign)
                and _is_os_call(first.value, "fork")
                and isinstance(first.targets[0], ast.Name)
                and isinstance(second, ast.If)
                and isinstance(second.test, ast.Compare)
                and isinstance(second.test.left, ast.Name)
                and second.test.left.id == first.targets[0].id
                and isinstance(second.test.ops[0], ast.Eq)
                and isinstance(second.test.comparators[0], ast.Constant)
                and second.test.comparators[0].value == 0
            ):
                continue
            if _ends_with_exit(second.body):
                safe.append(first.lineno)
    return forks, safe


def test_every_fork_in_the_tests_ends_its_child_with_os_exit() -> None:
    files = sorted(TESTS.rglob("*.py"))
    for helper in SRC_HELPERS:
        files += sorted(helper.rglob("*.py")) if helper.is_dir() else [helper]
    unsafe: list[str] = []
    checked = 0
    for path in files:
        source = path.read_text()
        if "fork()" not in source:
            continue
        forks, safe = _child_branches(ast.parse(source))
        checked += len(forks)
        unsafe += [f"{path.relative_to(ROOT)}:{line}" for line in forks if line not in safe]
    assert checked >= 2, "the check found no fork to check: has it lost its way?"
    assert not unsafe, (
        "a forked child must leave by os._exit whatever happens: write "
        "`pid = os.fork()` then `if pid == 0:` with a lone os._exit(...) or a try whose "
        f"finally calls os._exit: {unsafe}"
    )


@pytest.mark.parametrize(
    ("source", "safe"),
    [
        ("pid = os.fork()\nif pid == 0:\n    os._exit(0)\n", True),
        (
            "p = os.fork()\nif p == 0:\n    s = 1\n    try:\n        f()\n    finally:\n"
            "        os._exit(s)\n",
            True,
        ),
        ("pid = os.fork()\nif pid == 0:\n    f()\n    os._exit(0)\n", False),
        (
            "pid = os.fork()\nif pid == 0:\n    x = f()\n    try:\n        g()\n    finally:\n"
            "        os._exit(0)\n",
            False,
        ),
        ("if os.fork() == 0:\n    os._exit(0)\n", False),
    ],
)
def test_the_fork_check_tells_a_guaranteed_exit(source: str, safe: bool) -> None:
    forks, found = _child_branches(ast.parse(textwrap.dedent(source)))
    assert len(forks) == 1
    assert (found == forks) is safe
