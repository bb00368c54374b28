"""Plug-in lookup shared by transports, result backends and pools: name to class, lazily.

Built-ins are ``module:Class`` strings imported only when asked for (an app on SQLite never
imports redis-py); third parties add theirs through an entry point group. A missing optional
dependency names the bundle to install.

Start-up validation (:func:`check_url`) does not import a built-in's module either: it asks the
import system whether the optional packages it needs are installed, which costs a few ``stat``
calls instead of the tens of milliseconds redis-py or aio-pika take to import. The entry points
(:mod:`importlib.metadata`, itself ~10 ms to import plus a scan of every installed distribution)
are read only for a scheme that no built-in serves.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping
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


def _missing_module(what: str, name: str | None) -> ImproperlyConfigured:
    """The error for an uninstalled module ``name``, naming the bundle that installs it."""
    bundle = BUNDLES.get((name or "").split(".")[0])
    hint = f' (pip install "celeriac[{bundle}]")' if bundle else ""
    return ImproperlyConfigured(f"{what} needs the module {name!r}{hint}")


def load_class(path: str, what: str) -> type[Any]:
    """Import ``module:Class``; a missing optional dependency names the bundle to install."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise _missing_module(what, exc.name) from exc
    cls = getattr(module, attr, None)
    if not isinstance(cls, type):
        raise ImproperlyConfigured(f"{what}: {path!r} is not a class")
    return cls


def _entry_point_path(scheme: str, group: str) -> str | None:
    """The ``module:Class`` a third party registered for ``scheme`` in ``group``, if any."""
    from importlib.metadata import entry_points  # only for a scheme no built-in serves

    for ep in entry_points(group=group):
        if ep.name == scheme:
            path: str = ep.value
            return path
    return None


def _unknown_scheme(
    url: str, builtin: Mapping[str, str], group: str, setting: str
) -> ImproperlyConfigured:
    from importlib.metadata import entry_points  # an error path: the list of what is known

    scheme = scheme_of(url)
    known = sorted(set(builtin) | {ep.name for ep in entry_points(group=group)})
    return ImproperlyConfigured(
        f"{setting} {redact_url(url)!r}: unknown scheme {scheme!r}; known: {', '.join(known)}"
    )


def class_for_url(
    url: str, builtin: Mapping[str, str], group: str, setting: str, base: type
) -> type[Any]:
    """The class serving ``url``'s scheme: a built-in, else an entry point of ``group``."""
    scheme = scheme_of(url)
    path = builtin.get(scheme)
    if path is None:
        path = _entry_point_path(scheme, group)
    if path is None:
        raise _unknown_scheme(url, builtin, group, setting)
    cls = load_class(path, f"{setting} scheme {scheme!r}")
    if not issubclass(cls, base):
        raise ImproperlyConfigured(f"{path!r} is not a celeriac {base.__name__}")
    return cls


def check_url(
    url: str,
    builtin: Mapping[str, str],
    group: str,
    setting: str,
    base: type,
    requires: Mapping[str, tuple[str, ...]],
) -> None:
    """Fail now, naming ``setting``, if :func:`class_for_url` would fail for ``url`` later.

    A built-in scheme is checked without importing its module: each top-level package that
    ``requires`` lists for that module (in the order the module imports them, so that the
    first one missing is the one an import would name) must be installed. A third party's
    scheme is loaded in full, as before, since only its import can tell whether it works.
    """
    scheme = scheme_of(url)
    path = builtin.get(scheme)
    if path is None:
        class_for_url(url, builtin, group, setting, base)
        return
    for name in requires.get(path.partition(":")[0], ()):
        if not _installed(name):
            raise _missing_module(f"{setting} scheme {scheme!r}", name)


def _installed(name: str) -> bool:
    """Whether the top-level module ``name`` would import, without importing it."""
    if name in sys.modules:  # imported already, or blocked (None), or a stub without a spec
        return sys.modules[name] is not None
    return importlib.util.find_spec(name) is not None
