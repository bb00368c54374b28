"""``-A module[:attr]``: find the app the way Celery users expect, with one clear error if not.

A prefork child finds its app here too, and a child needs no command line: click (~20 ms to
import) is imported only to report a mistake, as the CLI's usage error.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

from celeriac.app import Celeriac

if TYPE_CHECKING:
    import click

CANDIDATE_NAMES = ("app", "celeriac", "celery")


def find_app(spec: str) -> Celeriac:
    """Import ``module`` (the current directory first on the path) and return its app.

    ``module:attr`` names the app (or a factory returning it); a bare module is searched for an
    attribute ``app``, ``celeriac`` or ``celery`` holding an app, then for its only app.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _bad_app(f"cannot import {module_name!r}: {exc}") from None
    if attr:
        obj: Any = getattr(module, attr, None)
        if obj is None:
            raise _bad_app(f"{module_name!r} has no attribute {attr!r}")
        if callable(obj) and not isinstance(obj, Celeriac):
            obj = obj()
        if not isinstance(obj, Celeriac):
            raise _bad_app(f"{spec!r} is not a Celeriac app")
        return obj
    for name in CANDIDATE_NAMES:
        found = getattr(module, name, None)
        if isinstance(found, Celeriac):
            return found
    apps = {id(v): v for v in vars(module).values() if isinstance(v, Celeriac)}
    if len(apps) == 1:
        return next(iter(apps.values()))
    if apps:
        raise _bad_app(f"{module_name!r} holds several apps; name one as {module_name}:ATTR")
    raise _bad_app(f"no Celeriac app found in {module_name!r}")


def _bad_app(message: str) -> click.BadParameter:
    """The usage error for a bad ``-A`` (see the module docstring for the late import)."""
    import click

    return click.BadParameter(message, param_hint="-A")
