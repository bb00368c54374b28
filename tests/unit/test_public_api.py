"""The public names are exactly those in ``__all__``, each importable (httpx's habit)."""

from __future__ import annotations

import subprocess
import sys

import celeriac


def test_all_names_exist_and_are_public() -> None:
    for name in celeriac.__all__:
        assert hasattr(celeriac, name), name
    assert sorted(celeriac.__all__) == sorted(set(celeriac.__all__))


def test_no_public_name_is_left_out_of_all() -> None:
    public = {
        name
        for name, value in vars(celeriac).items()
        if not name.startswith("_") and not isinstance(value, type(celeriac))
    }
    assert public <= set(celeriac.__all__) | {"annotations"}


def test_importing_celeriac_imports_what_is_used_only() -> None:
    """``import celeriac`` (run first by every ``celeriac.*`` import) imports each exported name
    on first use: ``celeriac call`` does not import the worker, and ``celeriac worker`` starts
    the fork server before it imports the app's machinery."""
    code = (
        "import sys, celeriac; before = sorted(m for m in sys.modules if m.startswith('celeriac'));"
        "celeriac.Worker; print(before, 'celeriac.worker.worker' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['celeriac'] True"


def test_importing_celeriac_loads_no_optional_dependency() -> None:
    """An app on SQLite never pays for redis-py, aio-pika, msgpack, yaml or zstandard."""
    code = (
        "import sys, celeriac; "
        "print(sorted(m for m in ('redis', 'aio_pika', 'msgpack', 'yaml', 'zstandard') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
