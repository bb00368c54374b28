"""``task_routes`` in every form Celery documents, each turned into one kind of router.

A router is asked ``(name, args, kwargs, options, task)`` and answers a queue name, a dict of
routing options (``queue``, ``exchange``, ``routing_key``, ``priority``...), a queue object, or
``None`` to pass. The setting may be:

* a dict: exact task names, glob patterns (``"feed.tasks.*"``) or ``re.compile`` patterns as keys;
  exact names are looked up first, then the patterns in order;
* a list (or tuple) of (pattern, route) pairs: the same, with the order written down
  (Celery's ``task_routes = ([("feed.tasks.*", {"queue": "feeds"}), ...],)``);
* a function or any callable with Celery's signature ``(name, args, kwargs, options, task=None,
  **kw)`` (one written for celeriac's earlier ``(name, args, kwargs, options)`` works too: a
  router that takes no ``task`` keyword is not given one);
* an object or class with ``route_for_task(task, args, kwargs)`` (Celery's pre-4.0 routers; a
  class is instantiated without arguments);
* a dotted path to any of those, ``"myapp.routers.route_task"`` or ``"myapp.routers:route_task"``,
  imported at the first send (as Celery does: the routers module may import the app);
* a list or tuple of any of the above, asked in order: the first answer that is not ``None`` wins.
"""

from __future__ import annotations

import importlib
import inspect
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from celeriac.errors import ImproperlyConfigured
from celeriac.routing.foreign import is_queue_like

SETTING = "setting 'task_routes'"

#: ``(name, args, kwargs, options, task) -> answer``; every prepared router has this shape.
RouterFn = Callable[[str, Sequence[Any], Mapping[str, Any], Mapping[str, Any], Any], Any]


class MapRouter:
    """A dict or an ordered list of pairs: exact names first, then patterns in order."""

    __slots__ = ("exact", "patterns")

    def __init__(self, items: Sequence[tuple[Any, Any]], where: str) -> None:
        self.exact: dict[str, Any] = {}
        self.patterns: list[tuple[re.Pattern[str], Any]] = []
        for key, value in items:
            if isinstance(key, re.Pattern):
                self.patterns.append((key, value))
            elif isinstance(key, str) and any(c in key for c in "*?["):
                import fnmatch  # only for glob keys: ~1 ms of import every process would pay

                self.patterns.append((re.compile(fnmatch.translate(key)), value))
            elif isinstance(key, str):
                self.exact.setdefault(key, value)
            else:
                raise ImproperlyConfigured(
                    f"{SETTING}: {where}: a key must be a task name, a glob or a compiled "
                    f"regex, not {key!r}"
                )
            check_answer(value, f"{where}: route of {key!r}")

    def __call__(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        task: Any = None,
    ) -> Any:
        if name in self.exact:
            return self.exact[name]
        for regex, value in self.patterns:
            if regex.match(name):
                return value
        return None


def check_answer(value: Any, where: str) -> None:
    """Refuse a route value that names no destination (checked for dict routes at start-up,
    for callable routers at each answer)."""
    if value is None or isinstance(value, str | Mapping) or is_queue_like(value):
        return
    raise ImproperlyConfigured(
        f"{SETTING}: {where} must be a queue name, a dict of routing options or a Queue, "
        f"not {value!r}"
    )


def _takes_task(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` accepts Celery's ``task=`` keyword (by name or ``**kw``)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: positional only
        return False
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        or (p.name == "task" and p.kind is not inspect.Parameter.POSITIONAL_ONLY)
        for p in parameters
    )


def adapt(router: Any, where: str) -> RouterFn:
    """One router object (not a dict, list or path) as a :data:`RouterFn`."""
    if isinstance(router, type):
        try:
            router = router()
        except Exception as exc:
            raise ImproperlyConfigured(
                f"{SETTING}: {where}: cannot instantiate router class {router.__name__}: {exc}"
            ) from exc
    legacy = getattr(router, "route_for_task", None)
    if callable(legacy):

        def old_style(
            name: str, args: Sequence[Any], kwargs: Mapping[str, Any], options: Any, task: Any
        ) -> Any:
            return legacy(name, args, kwargs)

        return old_style
    if not callable(router):
        raise ImproperlyConfigured(
            f"{SETTING}: {where} must be a dict, a list of (pattern, route) pairs, a callable "
            f"or a dotted path, not {type(router).__name__}: {router!r}"
        )
    fn: Callable[..., Any] = router
    if _takes_task(fn):

        def celery_style(
            name: str, args: Sequence[Any], kwargs: Mapping[str, Any], options: Any, task: Any
        ) -> Any:
            return fn(name, args, kwargs, options, task=task)

        return celery_style

    def positional(
        name: str, args: Sequence[Any], kwargs: Mapping[str, Any], options: Any, task: Any
    ) -> Any:
        return fn(name, args, kwargs, options)

    return positional


def import_symbol(path: str, where: str) -> Any:
    """``"pkg.module.attr"`` (the longest importable module, then attributes, so a nested
    class works too) or ``"pkg.module:attr"``; fails naming the setting."""
    module_name, colon, attr = path.partition(":")
    parts = path.split(".")
    splits = (
        [(module_name, attr)]
        if colon
        else [(".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 1, 0, -1)]
    )
    for candidate, rest in splits:
        try:
            found = importlib.import_module(candidate)
        except ModuleNotFoundError as exc:
            # only "this module does not exist" moves to a shorter name, never an import
            # failing inside the module's own code
            if exc.name is not None and candidate.startswith(exc.name) and not colon:
                continue
            raise ImproperlyConfigured(
                f"{SETTING}: {where}: cannot import {candidate!r} for {path!r}: {exc}"
            ) from exc
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"{SETTING}: {where}: cannot import {candidate!r} for {path!r}: {exc}"
            ) from exc
        try:
            for part in rest.split("."):
                found = getattr(found, part)
        except AttributeError:
            raise ImproperlyConfigured(
                f"{SETTING}: {where}: module {candidate!r} has no {rest!r}"
            ) from None
        return found
    raise ImproperlyConfigured(f"{SETTING}: {where}: cannot import any module of {path!r}")


class LazyRouter:
    """A router named by a dotted path, imported at the first send (not when the settings are
    read: the routers module may import the app being configured)."""

    __slots__ = ("_lock", "_router", "path", "where")

    def __init__(self, path: str, where: str) -> None:
        module_name, colon, attr = path.partition(":")
        if not colon:
            module_name, _, attr = path.rpartition(".")
        if not module_name or not attr or not all(p.isidentifier() for p in attr.split(".")):
            raise ImproperlyConfigured(
                f"{SETTING}: {where}: {path!r} is not a dotted path to a router"
            )
        self.path = path
        self.where = where
        self._router: RouterFn | None = None
        self._lock = threading.Lock()

    def resolve(self) -> RouterFn:
        router = self._router
        if router is None:
            with self._lock:
                if self._router is None:
                    found = import_symbol(self.path, self.where)
                    self._router = prepare_one(found, f"{self.where} ({self.path})")
                router = self._router
        return router

    def __call__(
        self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any], options: Any, task: Any
    ) -> Any:
        return self.resolve()(name, args, kwargs, options, task)


def _pairs(items: Sequence[Any], where: str) -> list[tuple[Any, Any]]:
    pairs: list[tuple[Any, Any]] = []
    for index, item in enumerate(items):
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise ImproperlyConfigured(
                f"{SETTING}: {where}[{index}] must be a (pattern, route) pair, not {item!r} "
                "(an ordered list of pairs goes inside the list of routers: "
                'task_routes = ([("feed.tasks.*", {"queue": "feeds"})],))'
            )
        pairs.append((item[0], item[1]))
    return pairs


def prepare_one(spec: Any, where: str) -> RouterFn:
    """One element of ``task_routes`` as a router."""
    if isinstance(spec, Mapping):
        return MapRouter(list(spec.items()), where)
    if isinstance(spec, list | tuple):
        return MapRouter(_pairs(spec, where), where)
    if isinstance(spec, str):
        return LazyRouter(spec, where)
    if is_queue_like(spec):  # kombu queues are callable (they bind to a channel)
        raise ImproperlyConfigured(
            f"{SETTING}: {where} is a queue, not a router: {spec!r} (route to it with "
            '{"task.name": {"queue": ...}})'
        )
    return adapt(spec, where)


def prepare_routes(setting: Any) -> list[RouterFn]:
    """Every router ``task_routes`` describes, in the order they are asked."""
    if setting is None:
        return []
    if isinstance(setting, list | tuple):
        return [prepare_one(spec, f"router {i}") for i, spec in enumerate(setting)]
    return [prepare_one(setting, "router")]


def is_static(router: RouterFn) -> bool:
    """True for a router whose answer depends on the task name alone (a dict or pairs)."""
    return isinstance(router, MapRouter)


__all__ = ["MapRouter", "RouterFn", "check_answer", "is_static", "prepare_routes"]
