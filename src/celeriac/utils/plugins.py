"""Plug-in lookup shared by transports, result backends and pools: name to class, lazily.

Built-ins are ``module:Class`` strings imported only when asked for (an app on SQLite never
imports redis-py); third parties add theirs through an entry point group. A missing optional
dependency names the bundle to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from celeriac.errors import ImproperlyConfigured
from celeriac.utils.urls import redact_url, scheme_of

#: Top-level module of an optional dependency -> the bundle that installs it.
BUNDLES = {
    "redis": "redis",
    "aio_pika": "amqp",
    "aiormq": "amqp",
    "msgpack": "msgpack",
    "yaml": "yaml",
    "zstandard": "zstd",
    "cryptography": "auth",
}


def load_class(path: str, what: str) -> type[Any]:
    """Import ``module:Class``; a missing optional dependency names the bundle to install."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        bundle = BUNDLES.get((exc.name or "").split(".")[0])
        hint = f' (pip install "celeriac[{bundle}]")' if bundle else ""
        raise ImproperlyConfigured(f"{what} needs the module {exc.name!r}{hint}") from exc
    cls = getattr(module, attr, None)
    if not isinstance(cls, type):
        raise ImproperlyConfigured(f"{what}: {path!r} is not a class")
    return cls


def class_for_url(
    url: str, builtin: Mapping[str, str], group: str, setting: str, base: type
) -> type[Any]:
    """The class serving ``url``'s scheme: a built-in, else an entry point of ``group``."""
    scheme = scheme_of(url)
    path = builtin.get(scheme)
    if path is None:
        for ep in entry_points(group=group):
            if ep.name == scheme:
                path = ep.value
                break
    if path is None:
        known = sorted(set(builtin) | {ep.name for ep in entry_points(group=group)})
        raise ImproperlyConfigured(
            f"{setting} {redact_url(url)!r}: unknown scheme {scheme!r}; known: {', '.join(known)}"
        )
    cls = load_class(path, f"{setting} scheme {scheme!r}")
    if not issubclass(cls, base):
        raise ImproperlyConfigured(f"{path!r} is not a celeriac {base.__name__}")
    return cls
