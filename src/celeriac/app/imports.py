"""Importing the modules an app names, so their tasks are registered before a worker runs them.

Three sources, as in Celery: the ``include`` argument and setting and the ``imports`` setting
(module names, imported as given: a missing one is an error naming it), and
``app.autodiscover_tasks(packages, related_name="tasks")`` (``<package>.tasks`` of each package,
skipped when a package has no such module; with no packages, Django's installed apps).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Sequence

from celeriac.errors import ImproperlyConfigured

#: What ``autodiscover_tasks`` was given: package names, or a callable returning them.
Packages = Sequence[str] | Callable[[], Iterable[str]] | None


def import_modules(names: Iterable[str], setting: str) -> None:
    """Import each module; a missing one fails naming the setting that lists it."""
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                raise ImproperlyConfigured(
                    f"setting {setting!r}: no module named {name!r}"
                ) from None
            raise


def discover(packages: Packages, related_name: str | None) -> list[str]:
    """Import ``<package>.<related_name>`` for every package (Django's installed apps when
    ``packages`` is None); returns the modules imported. A package without that module is
    skipped; an error raised while importing one that exists propagates."""
    names = _packages(packages)
    imported: list[str] = []
    for package in names:
        if related_name is None:
            importlib.import_module(package)
            imported.append(package)
            continue
        module = f"{package}.{related_name}"
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # the package itself is missing
            raise ImproperlyConfigured(
                f"autodiscover_tasks: no package named {package!r}"
            ) from None
        if found:
            importlib.import_module(module)
            imported.append(module)
    return imported


def _packages(packages: Packages) -> list[str]:
    if packages is None:
        return django_app_packages()
    if callable(packages):
        return list(packages())
    if isinstance(packages, str):
        return [packages]
    return list(packages)


def django_app_packages() -> list[str]:
    """The installed apps of a configured Django project (Celery's default for
    ``autodiscover_tasks()``); empty when Django is not in use."""
    if "django" not in sys.modules:
        return []
    from django.apps import apps  # type: ignore[import-not-found,import-untyped,unused-ignore]
    from django.conf import settings  # type: ignore[import-not-found,import-untyped,unused-ignore]

    if not settings.configured:
        return []
    return [config.name for config in apps.get_app_configs()]
