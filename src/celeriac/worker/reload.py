"""Autoreload for development (``worker --reload``): watch the app's source, report edits.

This module only *notices*: :func:`app_source_paths` picks the directories worth watching and
:class:`Reloader` reports each debounced batch of changed ``.py`` files to a callback. What to do
then (a warm stop and a re-exec of the worker) is the worker's business, because only the worker
knows how to finish its running tasks first.

The watching is ``watchfiles`` (inotify, FSEvents, ReadDirectoryChangesW through Rust's
``notify``), not polling: an idle worker with ``--reload`` stays idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import site
import sys
import sysconfig
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from watchfiles import Change, DefaultFilter, awatch

if TYPE_CHECKING:
    from celeriac.app import Celeriac

__all__ = ["PythonSourceFilter", "Reloader", "app_source_paths"]

logger = logging.getLogger("celeriac.worker.reload")

#: The ``celeriac`` package directory (this file is ``celeriac/worker/reload.py``).
_PACKAGE_DIR = Path(__file__).resolve().parent.parent


# -- what to watch --------------------------------------------------------------------------------
def _installed_roots() -> list[Path]:
    """Where code the user does not edit lives: the stdlib, site-packages, celeriac itself."""
    roots: set[str] = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        with contextlib.suppress(KeyError):
            roots.add(sysconfig.get_paths()[key])
    with contextlib.suppress(AttributeError):  # site.getsitepackages is missing in old virtualenvs
        roots.update(site.getsitepackages())
    with contextlib.suppress(AttributeError):
        roots.add(site.getusersitepackages())
    roots.add(str(_PACKAGE_DIR))  # celeriac's own source, even when installed editable
    return [Path(r).resolve() for r in roots if r]


def _is_installed(path: Path, roots: Sequence[Path]) -> bool:
    # site-packages of any other environment on sys.path counts too, wherever it is.
    if {"site-packages", "dist-packages"} & set(path.parts):
        return True
    return any(path.is_relative_to(root) for root in roots)


def _module_dir(module: ModuleType | None) -> Path | None:
    file = getattr(module, "__file__", None)
    if not file:  # builtins, namespace packages, modules made in memory
        return None
    return Path(file).resolve().parent


def _source_dir(module_name: str) -> Path | None:
    """The directory to watch for ``module_name``: that of its top-level package when it has one.

    A task module's helpers are usually its siblings or cousins in the same package
    (``shop/tasks/email.py`` importing ``shop/models.py``), so watching only the task module's own
    directory would miss the edit that matters. The top-level package is the project's code.
    """
    top = module_name.partition(".")[0]
    if top != module_name:
        top_dir = _module_dir(sys.modules.get(top))
        if top_dir is not None:
            return top_dir
    return _module_dir(sys.modules.get(module_name))


def _app_modules(app: Celeriac) -> list[str]:
    """Names of the modules holding ``app`` at module level (``__main__`` included: a script that
    builds its app and runs the worker is reloaded by watching the script's directory)."""
    found = []
    for name, module in list(sys.modules.items()):
        # sys.modules may hold None (a blocked import) or any object a module put there.
        namespace = getattr(module, "__dict__", None)
        if isinstance(namespace, dict) and any(v is app for v in list(namespace.values())):
            found.append(name)
    return found


def minimal_paths(paths: Iterable[Path]) -> list[Path]:
    """``paths`` resolved, deduplicated, without any that lies inside another (watchfiles watches
    recursively, so a directory and its parent would report every change twice)."""
    kept: list[Path] = []
    for path in sorted({p.resolve() for p in paths}, key=lambda p: len(p.parts)):
        if not any(path.is_relative_to(parent) for parent in kept):
            kept.append(path)
    return sorted(kept)


def app_source_paths(app: Celeriac, extra: Iterable[Path] = ()) -> list[Path]:
    """The directories to watch for ``app``: those of the modules that declare its tasks and of
    the module holding the app, minus installed code (stdlib, site-packages, celeriac), plus
    ``extra`` as given (even if installed: the caller asked for it). Minimal: no directory is
    returned along with one of its parents. Paths that do not exist are left out (watchfiles
    would refuse them); a missing ``extra`` is logged.
    """
    roots = _installed_roots()
    module_names = {getattr(task.fn, "__module__", None) for task in app.tasks.values()}
    module_names.update(_app_modules(app))
    found: set[Path] = set()
    for name in module_names:
        if not name:
            continue
        directory = _source_dir(name)
        if directory is not None and not _is_installed(directory, roots):
            found.add(directory)
    for path in extra:
        if path.exists():
            found.add(path)
        else:
            logger.warning("--reload: %s does not exist; not watching it", path)
    return minimal_paths(p for p in found if p.exists())


# -- watching --------------------------------------------------------------------------------------
class PythonSourceFilter(DefaultFilter):
    """Only ``.py`` files, and none under the directories watchfiles ignores by default
    (``__pycache__``, ``.git``, ``.venv``, ``.mypy_cache``...). Compiled ``.pyc`` files and
    editors' swap files are not edits of the source."""

    def __call__(self, change: Change, path: str) -> bool:
        return path.endswith(".py") and super().__call__(change, path)


class Reloader:
    """Watches ``paths`` and calls ``on_change`` with each debounced batch of changed ``.py``
    files (added, modified or deleted), from the event loop's thread.

    ``debounce_ms`` bounds how long one batch may gather changes: after the first change, the
    watcher keeps collecting while changes keep coming (50 ms apart at most), so an editor's
    burst of writes, or a ``git checkout``, is one batch and one reload.
    """

    #: How long the watcher waits for a further change before closing a batch.
    STEP_MS = 50

    def __init__(
        self,
        paths: Sequence[Path],
        on_change: Callable[[set[Path]], None],
        *,
        debounce_ms: int = 300,
    ) -> None:
        if not paths:
            raise ValueError("Reloader needs at least one path to watch")
        if debounce_ms <= 0:
            raise ValueError(f"debounce_ms must be positive, not {debounce_ms!r}")
        self.paths = list(paths)
        self.on_change = on_change
        self.debounce_ms = debounce_ms

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until ``stop`` is set (or this coroutine is cancelled).

        ``stop`` is not handed to watchfiles itself: watchfiles *sets* its stop event when it is
        cancelled, and cancelling the reloader must not stop the caller's worker. A relay task
        sets a private event instead; the watcher thread notices it within ``STEP_MS``.
        """
        halt = asyncio.Event()
        relay = asyncio.create_task(self._relay(stop, halt), name="celeriac-reload-stop")
        logger.debug("--reload: watching %s", ", ".join(str(p) for p in self.paths))
        try:
            async for changes in awatch(
                *self.paths,
                watch_filter=PythonSourceFilter(),
                debounce=self.debounce_ms,
                step=min(self.STEP_MS, self.debounce_ms),
                stop_event=halt,
            ):
                changed = {Path(path) for _change, path in changes}
                self._report(changed)
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay

    @staticmethod
    async def _relay(stop: asyncio.Event, halt: asyncio.Event) -> None:
        await stop.wait()
        halt.set()

    def _report(self, changed: set[Path]) -> None:
        names = sorted(str(p) for p in changed)
        shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
        logger.info("--reload: %d file(s) changed: %s", len(names), shown)
        try:
            self.on_change(changed)
        except Exception:
            # A broken callback must not end the watching: the next save should still reload.
            logger.exception("--reload: the change callback failed")
