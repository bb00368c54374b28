"""``worker_pool_start_method``: how prefork children start (see celeriac.worker.pools.starter)."""

from __future__ import annotations

import multiprocessing
import sys

import pytest

from celeriac import Celeriac, ImproperlyConfigured
from celeriac.worker.pools.starter import start_method


def test_the_default_is_the_fork_server_on_linux_and_spawn_elsewhere() -> None:
    assert start_method(None) == ("forkserver" if sys.platform == "linux" else "spawn")


@pytest.mark.parametrize(
    ("value", "method"), [("forkserver", "forkserver"), ("fork", "forkserver"), ("spawn", "spawn")]
)
def test_celerys_values_are_read(value: str, method: str) -> None:
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"{method} does not exist on {sys.platform}")
    assert start_method(value) == method
    app = Celeriac("t", broker="memory://", worker_pool_start_method=value)
    try:
        assert app.conf.worker_pool_start_method == value
    finally:
        app.close()


def test_an_unknown_method_fails_naming_the_setting() -> None:
    message = r"setting 'worker_pool_start_method': 'threads' is not one of 'forkserver', 'fork'"
    with pytest.raises(ImproperlyConfigured, match=message):
        Celeriac("t", broker="memory://", worker_pool_start_method="threads")
    with pytest.raises(ImproperlyConfigured, match=message):
        start_method("threads")
