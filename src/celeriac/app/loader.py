"""Find an app by name (``-A module[:attr]``) the way Celery users expect, with one clear error.

The CLI's ``-A`` and every prefork child (which re-imports the app by name) load it here, so the
loading lives in the app layer and reports a mistake as :class:`~celeriac.errors.AppNotFound`;
the CLI turns that into its usage error.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from celeriac.app.base import Celeriac
from celeriac.errors import AppNotFound

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
        raise AppNotFound(f"cannot import {module_name!r}: {exc}") from None
    if attr:
        obj: Any = getattr(module, attr, None)
        if obj is None:
            raise AppNotFound(f"{module_name!r} has no attribute {attr!r}")
        if callable(obj) and not isinstance(obj, Celeriac):
            obj = obj()
        if not isinstance(obj, Celeriac):
            raise AppNotFound(f"{spec!r} is not a Celeriac app")
        return obj
    for name in CANDIDATE_NAMES:
        found = getattr(module, name, None)
        if isinstance(found, Celeriac):
            return found
    apps = {id(v): v for v in vars(module).values() if isinstance(v, Celeriac)}
    if len(apps) == 1:
        return next(iter(apps.values()))
    if apps:
        raise AppNotFound(f"{module_name!r} holds several apps; name one as {module_name}:ATTR")
    raise AppNotFound(f"no Celeriac app found in {module_name!r}")
