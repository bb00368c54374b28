"""Logging set-up: setup_logging receivers take it over, else one handler and after_setup_*."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from logging.handlers import WatchedFileHandler
from pathlib import Path
from typing import Any

import pytest

from celeriac import signals
from celeriac.utils import logsetup


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure() changes the process's root logger: put it back as pytest had it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    logsetup._current = None


def test_a_setup_logging_receiver_takes_logging_over(tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []
    after: list[str] = []

    def own(**kwargs: Any) -> None:
        calls.append(kwargs)

    def noted(**kwargs: Any) -> None:
        after.append("after")

    root = logging.getLogger()
    before = root.handlers[:]
    signals.setup_logging.connect(own)
    signals.after_setup_logger.connect(noted)
    try:
        done = logsetup.configure(
            logging.INFO, str(tmp_path / "%n%I.log"), nodename="w1@box", index=2
        )
    finally:
        signals.setup_logging.disconnect(own)
        signals.after_setup_logger.disconnect(noted)
    assert done is False
    assert root.handlers == before  # celeriac configured nothing
    assert after == []
    [kwargs] = calls
    assert kwargs["loglevel"] == logging.INFO
    assert kwargs["logfile"] == str(tmp_path / "w1-2.log")
    assert kwargs["colorize"] is False and "%(message)s" in kwargs["format"]
    setup = logsetup.current()
    assert setup is not None and setup.logfile == str(tmp_path / "%n%I.log")  # for the children


def test_without_receivers_the_root_logger_writes_to_the_node_file(tmp_path: Path) -> None:
    seen: list[tuple[str, str, Any]] = []

    def root_done(logger: logging.Logger, logfile: Any, **kwargs: Any) -> None:
        seen.append(("logger", logger.name, logfile))

    def task_done(logger: logging.Logger, logfile: Any, **kwargs: Any) -> None:
        seen.append(("task", logger.name, logfile))

    signals.after_setup_logger.connect(root_done)
    signals.after_setup_task_logger.connect(task_done)
    try:
        assert logsetup.configure(logging.INFO, str(tmp_path / "%n%I.log"), nodename="w1@box")
    finally:
        signals.after_setup_logger.disconnect(root_done)
        signals.after_setup_task_logger.disconnect(task_done)
    path = str(tmp_path / "w1.log")  # the worker itself: %I is empty
    assert seen == [("logger", "root", path), ("task", "celeriac.task", path)]
    [handler] = logging.getLogger().handlers
    assert isinstance(handler, WatchedFileHandler)
    logging.getLogger("some.module").info("hello %s", "file")
    handler.flush()
    assert "INFO/MainProcess] hello file" in Path(path).read_text()


def test_a_failing_setup_logging_receiver_stops_the_set_up() -> None:
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("my logging config is broken")

    signals.setup_logging.connect(broken)
    try:
        with pytest.raises(RuntimeError, match="my logging config is broken"):
            logsetup.configure(logging.INFO)
    finally:
        signals.setup_logging.disconnect(broken)


def test_worker_log_format_datefmt_and_keeping_the_programs_handlers(tmp_path: Path) -> None:
    path = tmp_path / "w.log"
    logsetup.configure(
        logging.INFO, str(path), fmt="%(asctime)s|%(levelname)s|%(message)s", datefmt="%Y"
    )
    logging.getLogger("x").warning("shaped")
    for handler in logging.getLogger().handlers:
        handler.flush()
    [line] = path.read_text().splitlines()
    year, level, message = line.split("|")
    assert len(year) == 4 and year.isdigit() and (level, message) == ("WARNING", "shaped")
    setup = logsetup.current()
    assert setup is not None and setup.datefmt == "%Y"  # the prefork children get it too

    mine = logging.StreamHandler()
    root = logging.getLogger()
    root.handlers[:] = [mine]
    assert logsetup.configure(logging.DEBUG, str(tmp_path / "other.log"), hijack=False)
    assert root.handlers == [mine]  # kept, and no handler of celeriac's beside it
    assert root.level == logging.DEBUG
    assert not (tmp_path / "other.log").exists()
