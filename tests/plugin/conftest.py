"""The plugin's tests run a user's test files with ``pytester``, as ``pytest`` would run them.

``pytester`` is a plugin of pytest's own that is off by default; a conftest below the top level
may not name plugins in ``pytest_plugins`` (pytest refuses it), so it is loaded here when pytest
configures this directory's conftest.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib.metadata import entry_points

import pytest

PLUGIN = "celeriac.contrib.pytest"


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")


def plugin_installed() -> bool:
    """Whether the installed metadata registers the plugin (``pytest11`` entry point)."""
    return any(ep.value == PLUGIN for ep in entry_points(group="pytest11"))


def plugin_args() -> list[str]:
    """What a user's run needs to load the plugin: nothing once its entry point is installed
    (naming it again would register it twice, which pytest refuses), else ``-p``."""
    return [] if plugin_installed() else ["-p", PLUGIN]


@pytest.fixture(autouse=True)
def _no_proj_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's project here is a package named ``proj``, as tests/parity's is: a run in a
    process that imported that one first (``make unit`` shares processes between modules) must
    import the user's (the modules come back after the test)."""
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        monkeypatch.delitem(sys.modules, name)


@pytest.fixture
def run_user_tests(pytester: pytest.Pytester) -> Callable[..., pytest.RunResult]:
    """``run_user_tests(*args)``: run pytest in-process on the files written into ``pytester``,
    with the plugin loaded as a user's installation loads it."""

    def run(*args: str) -> pytest.RunResult:
        # the plugin is imported in this process already, so the inner run cannot rewrite its
        # asserts (a user's run can): that warning is about this harness, not the plugin.
        # Hypothesis's plugin imports hypothesis in each run (2 s; pytester then forgets it).
        # the user's run: without Hypothesis' plugin (2 s each) and pytest-django's, which
        # refuses a second test environment in a process where tests/djangoproject set Django up
        quiet = [
            "-W",
            "ignore::pytest.PytestAssertRewriteWarning",
            "-p",
            "no:hypothesispytest",
            "-p",
            "no:django",
        ]
        return pytester.runpytest(*plugin_args(), "-p", "no:cacheprovider", *quiet, *args)

    return run
