"""Autoreload: which directories an app's source lives in, and a real watcher on a temp dir."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from watchfiles import Change

from celeriac import Celeriac
from celeriac.testing import memory_app
from celeriac.worker.reload import PythonSourceFilter, Reloader, app_source_paths, minimal_paths

# -- app_source_paths -----------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A package on sys.path: ``<pkg>/app.py`` holds the app, ``<pkg>/tasks/email.py`` declares a
    task on it, and a top-level module ``<pkg>_extra.py`` in another directory declares another.
    Module names are unique per test, and removed from sys.modules afterwards."""
    pkg = f"reloadproj_{uuid.uuid4().hex[:8]}"
    root = tmp_path / "proj"
    (root / pkg / "tasks").mkdir(parents=True)
    (root / pkg / "__init__.py").write_text("")
    (root / pkg / "app.py").write_text(
        "from celeriac.testing import memory_app\napp = memory_app('reloadproj')\n"
    )
    (root / pkg / "tasks" / "__init__.py").write_text("")
    (root / pkg / "tasks" / "email.py").write_text(
        textwrap.dedent(
            f"""
            from {pkg}.app import app

            @app.task
            def send(to: str) -> str:
                return to
            """
        )
    )
    other = tmp_path / "scripts"
    other.mkdir()
    (other / f"{pkg}_extra.py").write_text(
        textwrap.dedent(
            f"""
            from {pkg}.app import app

            @app.task
            def extra() -> None:
                pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.syspath_prepend(str(other))
    yield tmp_path, pkg
    for name in list(sys.modules):
        if name.startswith(pkg):
            del sys.modules[name]


def _import_app(pkg: str) -> Celeriac:
    import importlib

    importlib.import_module(f"{pkg}.tasks.email")
    importlib.import_module(f"{pkg}_extra")
    app: Celeriac = importlib.import_module(f"{pkg}.app").app
    assert len([n for n in app.tasks if n.startswith(pkg)]) == 2
    return app


def test_app_source_paths_watch_the_task_packages_and_the_app(project: tuple[Path, str]) -> None:
    tmp_path, pkg = project
    app = _import_app(pkg)
    # the top-level package of `pkg.tasks.email` (its helpers are cousins, not only siblings),
    # and the directory of the top-level module `pkg_extra`
    assert app_source_paths(app) == sorted(
        [(tmp_path / "proj" / pkg).resolve(), (tmp_path / "scripts").resolve()]
    )


def test_app_source_paths_extra_is_added_and_the_result_is_minimal(
    project: tuple[Path, str],
) -> None:
    tmp_path, pkg = project
    app = _import_app(pkg)
    conf = tmp_path / "conf"
    conf.mkdir()
    nested = tmp_path / "proj" / pkg / "tasks"  # inside a watched dir: dropped
    paths = app_source_paths(app, extra=[conf, nested, tmp_path / "missing"])
    assert paths == sorted(
        [(tmp_path / "proj" / pkg).resolve(), (tmp_path / "scripts").resolve(), conf.resolve()]
    )
    # extra's parent swallows what it contains
    assert app_source_paths(app, extra=[tmp_path]) == [tmp_path.resolve()]


def test_app_source_paths_skip_stdlib_and_celeriac() -> None:
    app = memory_app("skip")
    app.task(os.path.join)  # defined in the stdlib (posixpath / ntpath)
    app.task(memory_app)  # defined in celeriac itself
    app.task(textwrap.dedent)  # defined in the stdlib, another module
    app.task(click.echo)  # defined in site-packages
    assert len(set(app.tasks) - set(memory_app("builtins only").tasks)) == 4
    assert app_source_paths(app) == []


def test_minimal_paths(tmp_path: Path) -> None:
    a, ab, c = tmp_path / "a", tmp_path / "a" / "b", tmp_path / "c"
    assert minimal_paths([ab, a, c, a, tmp_path / "a" / ".." / "a"]) == [a, c]


def test_python_source_filter() -> None:
    keep = PythonSourceFilter()
    assert keep(Change.modified, "/src/shop/tasks.py")
    assert keep(Change.deleted, "/src/shop/tasks.py")
    assert not keep(Change.modified, "/src/shop/notes.txt")
    assert not keep(Change.modified, "/src/shop/tasks.pyc")
    assert not keep(Change.modified, "/src/shop/__pycache__/tasks.py")
    assert not keep(Change.modified, "/src/.venv/lib/x.py")


# -- Reloader on a real directory -----------------------------------------------------------------


class Batches:
    """on_change for the tests: records each batch and wakes the waiting test."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[set[Path]] = []
        self.changed = asyncio.Event()
        self.fail = fail

    def __call__(self, changed: set[Path]) -> None:
        self.batches.append(changed)
        self.changed.set()
        if self.fail:
            raise RuntimeError("callback broke")

    async def until(self, path: Path, timeout: float = 10.0) -> set[Path]:
        """Wait for the first batch that names ``path``; fail after ``timeout`` seconds."""

        async def wait() -> set[Path]:
            while True:
                for batch in self.batches:
                    if path in batch:
                        return batch
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(wait(), timeout)


async def start_watching(
    directory: Path, batches: Batches, **options: int
) -> tuple[asyncio.Task[None], asyncio.Event]:
    """Start a Reloader and return once it is demonstrably watching.

    watchfiles starts its watcher inside the first iteration and gives no signal when it is
    armed, so a canary file is rewritten until a change to it is reported (each attempt awaits
    the report for a moment: a bounded wait on an event, not a sleep)."""
    stop = asyncio.Event()
    reloader = Reloader([directory], batches, **options)
    task = asyncio.create_task(reloader.run(stop))
    canary = directory / "canary.py"
    for attempt in range(100):
        canary.write_text(f"# {attempt}\n")
        try:
            await asyncio.wait_for(batches.changed.wait(), 0.2)
        except TimeoutError:
            assert not task.done(), task
            continue
        return task, stop
    raise AssertionError("the reloader never reported the canary change")


def test_reloader_reports_changed_python_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "tasks.py"
    target.write_text("x = 1\n")

    async def scenario() -> set[Path]:
        batches = Batches()
        task, stop = await start_watching(tmp_path, batches, debounce_ms=100)
        target.write_text("x = 2\n")
        batch = await batches.until(target.resolve())
        stop.set()
        await asyncio.wait_for(task, 10)  # stop ends the run promptly
        return batch

    with caplog.at_level(logging.INFO, logger="celeriac.worker.reload"):
        batch = asyncio.run(scenario())
    assert target.resolve() in batch
    assert any("tasks.py" in r.getMessage() and "changed" in r.getMessage() for r in caplog.records)


def test_reloader_ignores_non_python_changes(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    target = tmp_path / "tasks.py"

    async def scenario() -> list[set[Path]]:
        batches = Batches()
        task, stop = await start_watching(tmp_path, batches, debounce_ms=100)
        notes.write_text("not code\n")  # first: were it reported, it would come no later ...
        target.write_text("x = 1\n")  # ... than this one's batch
        await batches.until(target.resolve())
        stop.set()
        await asyncio.wait_for(task, 10)
        return batches.batches

    reported = asyncio.run(scenario())
    assert all(path.suffix == ".py" for batch in reported for path in batch), reported
    assert notes.resolve() not in set().union(*reported)


def test_reloader_survives_a_failing_callback_and_cancel_leaves_stop_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "tasks.py"

    async def scenario() -> asyncio.Event:
        batches = Batches(fail=True)
        task, stop = await start_watching(tmp_path, batches, debounce_ms=100)
        target.write_text("x = 1\n")
        await batches.until(target.resolve())  # still watching after the canary's failure
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        return stop

    with caplog.at_level(logging.ERROR, logger="celeriac.worker.reload"):
        stop = asyncio.run(scenario())
    assert not stop.is_set()  # cancelling the reloader does not stop its caller
    assert any(r.exc_info and "callback broke" in str(r.exc_info[1]) for r in caplog.records)


def test_reloader_validates_its_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="path"):
        Reloader([], lambda changed: None)
    with pytest.raises(ValueError, match="debounce_ms"):
        Reloader([tmp_path], lambda changed: None, debounce_ms=0)
