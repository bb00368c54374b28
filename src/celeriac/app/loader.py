"""Find an app by name (``-A module[:attr]``) the way Celery users expect, with one clear error.

The CLI's ``-A`` and every prefork child (which re-imports the app by name) load it here, so the
loading lives in the app layer and reports a mistake as :class:`~celeriac.errors.AppNotFound`;
the CLI turns that into its usage error.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any

from celeriac.app.base import Celeriac
from celeriac.errors import AppNotFound

CANDIDATE_NAMES = ("app", "celeriac", "celery")
SUBMODULE_NAMES = ("celeriac", "celery")


def find_app(spec: str) -> Celeriac:
    """Import ``module`` (the current directory first on the path) and return its app, with
    the modules it names (``include``, ``imports``, ``autodiscover_tasks``) imported too, so the
    tasks a worker and each of its prefork children run are registered.

    ``module:attr`` names the app (or a factory returning it). A bare module is searched as
    Celery's ``-A`` does: an attribute ``app``, ``celeriac`` or ``celery`` holding an app; for a
    package, its submodule ``celeriac`` or ``celery`` (``-A proj`` finds ``proj/celery.py``);
    then the module's only app.
    """
    app = _find(spec)
    app.import_default_modules()
    return app


def _find(spec: str) -> Celeriac:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    module_name, _, attr = spec.partition(":")
    module = _import(module_name)
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
    if hasattr(module, "__path__"):  # a package: its celeriac.py or celery.py, as Celery's -A
        for submodule in SUBMODULE_NAMES:
            if importlib.util.find_spec(f"{module_name}.{submodule}") is not None:
                return _find(f"{module_name}.{submodule}")
    apps = {id(v): v for v in vars(module).values() if isinstance(v, Celeriac)}
    if len(apps) == 1:
        return next(iter(apps.values()))
    if apps:
        raise AppNotFound(f"{module_name!r} holds several apps; name one as {module_name}:ATTR")
    raise AppNotFound(f"no Celeriac app found in {module_name!r}")


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise AppNotFound(f"cannot import {module_name!r}: {exc}") from None
