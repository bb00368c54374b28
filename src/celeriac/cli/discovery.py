"""``-A module[:attr]``: find the app the way Celery users expect, with one clear error if not."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from celeriac.app import Celeriac

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
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}", param_hint="-A") from None
    if attr:
        obj: Any = getattr(module, attr, None)
        if obj is None:
            raise click.BadParameter(f"{module_name!r} has no attribute {attr!r}", param_hint="-A")
        if callable(obj) and not isinstance(obj, Celeriac):
            obj = obj()
        if not isinstance(obj, Celeriac):
            raise click.BadParameter(f"{spec!r} is not a Celeriac app", param_hint="-A")
        return obj
    for name in CANDIDATE_NAMES:
        found = getattr(module, name, None)
        if isinstance(found, Celeriac):
            return found
    apps = {id(v): v for v in vars(module).values() if isinstance(v, Celeriac)}
    if len(apps) == 1:
        return next(iter(apps.values()))
    if apps:
        raise click.BadParameter(
            f"{module_name!r} holds several apps; name one as {module_name}:ATTR", param_hint="-A"
        )
    raise click.BadParameter(f"no Celeriac app found in {module_name!r}", param_hint="-A")
