"""``Celeriac``: the app. Settings, the task registry, and the wiring of transport and backend.

There is no global app: tasks belong to the app that declared them, results to the app that sent
them, and a process may hold several apps. Nothing connects until it is first needed, so building
an app (and importing a tasks module) is free of I/O; but every setting is validated at once, so a
bad one fails at start-up naming itself.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Concatenate, Literal, ParamSpec, Protocol, TypeVar, overload

from celeriac import signals
from celeriac.app import config, imports
from celeriac.app.components import Component
from celeriac.app.producer import Producer
from celeriac.app.security import Security, load_security
from celeriac.app.sending import Sending, SendPlan
from celeriac.beat.api import BeatAPI
from celeriac.canvas.builtins import register_builtins
from celeriac.canvas.signature import Signature, signature
from celeriac.context import app_created, set_default_app
from celeriac.control import Control
from celeriac.errors import ImproperlyConfigured, NotRegistered
from celeriac.protocol.codec import Codecs
from celeriac.results import result as _result
from celeriac.results.base import Backend
from celeriac.results.writer import ResultWriter
from celeriac.routing import Queue, Router
from celeriac.signals import Signal
from celeriac.task import CORE_OPTIONS, build_task, shared_tasks
from celeriac.task import Task as _Task
from celeriac.transports.base import Transport
from celeriac.transports.registry import check_transport_url, create_transport
from celeriac.utils.rates import parse_rate
from celeriac.utils.urls import redact_url

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: The task options the worker's features declare: time limits (``TASK_OPTIONS`` of
#: :mod:`celeriac.worker.pools.base`) and ``rate_limit`` (of :mod:`celeriac.worker.consumer`).
#: A copy, so that building an app and declaring its tasks does not import the worker (a
#: producer never runs one; ~15 ms of imports); ``tests/unit/test_import_cost.py`` checks that
#: it equals the originals.
WORKER_TASK_OPTIONS: dict[str, Any] = {
    "time_limit": None,
    "soft_time_limit": None,
    "rate_limit": None,
}

#: Fixups, as Celery calls them: ``"module:function"`` paths, each called as ``fixup(app, source)``
#: when an app is created (``source`` is its ``config_source``) and again whenever it reads
#: settings from an object (``app.config_from_object(source)``). One that applies installs itself
#: and returns an object the app keeps for its lifetime (its signal receivers live that long);
#: one that does not returns ``None``. A string, not an import: the integrations sit above the app.
#: Django's applies when ``DJANGO_SETTINGS_MODULE`` is set or the settings come from Django's.
BUILTIN_FIXUPS: tuple[str, ...] = ("celeriac.contrib.django.fixup:fixup",)


class TaskDecorator(Protocol):
    """What ``@app.task(...)`` returns: turns a function into a typed task."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> _Task[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> _Task[P, R]: ...


class BoundTaskDecorator(Protocol):
    """What ``@app.task(bind=True, ...)`` returns: the task receives itself first."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]], /
    ) -> _Task[P, R]: ...

    @overload
    def __call__(self, fn: Callable[Concatenate[Any, P], R], /) -> _Task[P, R]: ...


class Celeriac(Sending):
    """A celeriac application.

    >>> app = Celeriac("shop")                      # SQLite broker and results in ./celeriac.db
    >>> app = Celeriac("shop", broker="redis://127.0.0.1:6379/0", backend="redis://...")
    """

    def __init__(
        self,
        main: str | None = None,
        *,
        broker: str | None = None,
        backend: str | None = None,
        config_source: Any = None,
        namespace: str | None = None,
        include: Sequence[str] | None = None,
        task_cls: type[_Task[Any, Any]] | str | None = None,
        set_as_current: bool = True,
        autofinalize: bool = True,
        strict_typing: bool = True,
        fixups: Sequence[str] | None = None,
        **settings: Any,
    ) -> None:
        """``Celeriac(main, broker=..., backend=..., include=[...], **settings)``, as Celery's.

        ``include`` lists modules imported when a worker starts (with the ``imports`` setting);
        ``task_cls`` is the default ``base`` of this app's tasks (a class or ``"module:Class"``);
        ``set_as_current=False`` keeps this app from becoming the default app. ``autofinalize``
        and ``strict_typing`` are accepted for Celery's sake: nothing here is finalized lazily,
        and task arguments are always checked against the signature (``typing=False`` per task
        turns it off). ``fixups`` replaces :data:`BUILTIN_FIXUPS` (``fixups=[]``: none).
        """
        self.main = main
        self.conf = config.Settings()
        self._given: dict[str, Any] = {}
        if config_source is not None:
            self._given.update(config.from_object(config_source, namespace))
        for key, value in settings.items():
            self._given[config.canonical_name(key)] = config.validate(key, value)
        if broker is not None:
            self._given["broker_url"] = config.validate("broker_url", broker)
        if backend is not None:
            self._given["result_backend"] = config.validate("result_backend", backend)
        if include is not None:
            self._given["include"] = config.validate("include", list(include))
        self.task_cls: type[_Task[Any, Any]] = _task_class(task_cls)
        self._task_base: type[_Task[Any, Any]] | None = None
        #: Packages given to autodiscover_tasks (or a callable giving them), imported with the
        #: ``include`` modules when a worker starts.
        self._autodiscover: list[tuple[imports.Packages, str | None]] = []
        self.codecs = Codecs.with_defaults()
        self.tasks: dict[str, _Task[Any, Any]] = {}
        #: Task options every task may use: the core ones plus those middleware declares.
        self.task_options: dict[str, Any] = {
            **CORE_OPTIONS,
            **WORKER_TASK_OPTIONS,
        }
        #: User worker components (classes), started by every worker of this app.
        self.components: list[Callable[[], Component]] = []
        self._control: Control | None = None
        self._writer: ResultWriter | None = None
        self._lock = threading.Lock()
        self._backend: Backend | None = None
        self._backend_made = False
        self._router: Router | None = None
        self._producer: Producer | None = None
        #: Celery's app signals: ``@app.on_after_configure.connect`` is where Celery's docs
        #: declare periodic tasks. Sent (once) when a worker or a beat loads the app.
        self.on_configure = Signal("on_configure")
        self.on_after_configure = Signal("on_after_configure", providing_args=("source",))
        self.on_after_finalize = Signal("on_after_finalize")
        self._finalized = False
        self._beat: BeatAPI | None = None
        self._configure()
        self.fixups: list[str] = list(BUILTIN_FIXUPS if fixups is None else fixups)
        #: The fixups that applied, by path (see :data:`BUILTIN_FIXUPS`).
        self.installed_fixups: dict[str, Any] = {}
        self._apply_fixups(config_source)  # before the tasks: a fixup may change task_cls
        register_builtins(self)
        for shared, options in shared_tasks():
            self.attach_shared(shared, options)
        app_created(self, set_as_current)

    # -- settings ---------------------------------------------------------------------------------
    def _configure(self) -> None:
        """Derive every setting from what was given, environment variables winning, and write
        them into ``self.conf`` in place (code that holds ``app.conf`` sees the change)."""
        fresh = config.Settings()
        config.apply(fresh, self._given)
        config.apply(fresh, config.from_environ())
        self._validate(fresh)
        self.conf.assign(fresh.as_dict())
        self.conf.listener = self._settings_changed
        self._router = None
        self._plans: dict[str, SendPlan] = {}
        self._backend, self._backend_made = None, False
        #: Whether sends carry a default ``reply_to`` (an ``rpc://`` backend); ``None`` until
        #: the first send finds out, so that a send to a store reads one attribute for it.
        self._replies: bool | None = None
        self._security: Security | None = None
        self._security_loaded = False

    @property
    def security(self) -> Security | None:
        """Who signs what this app sends and whom it trusts (:mod:`celeriac.app.security`);
        None when no ``security_*`` setting asks for signed messages. Loaded on first use
        (a worker asks at start-up, so a bad key fails there, naming the setting)."""
        if not self._security_loaded:
            with self._lock:
                if not self._security_loaded:
                    self._security = load_security(self.conf)
                    self._security_loaded = True
        return self._security

    def _validate(self, conf: config.Settings) -> None:
        """Check what can be checked without I/O: serializer names, schemes, queues."""
        serializers = self.codecs.serializers
        for name in ("task_serializer", "result_serializer"):
            value = getattr(conf, name)
            try:
                serializers.resolve_accept([value])
            except ImproperlyConfigured as exc:
                raise ImproperlyConfigured(f"setting {name!r}: {exc}") from None
        for name in ("accept_content", "result_accept_content"):
            value = getattr(conf, name)
            if value is not None:
                try:
                    serializers.resolve_accept(value)
                except ImproperlyConfigured as exc:
                    raise ImproperlyConfigured(f"setting {name!r}: {exc}") from None
        if conf.task_compression is not None and conf.task_compression not in (
            self.codecs.compressors
        ):
            raise ImproperlyConfigured(
                f"setting 'task_compression': unknown compression {conf.task_compression!r}"
            )
        check_transport_url(self._broker_url(conf))
        if conf.task_default_rate_limit is not None:
            try:
                parse_rate(conf.task_default_rate_limit)
            except ImproperlyConfigured as exc:
                raise ImproperlyConfigured(f"setting 'task_default_rate_limit': {exc}") from None
        Router.from_settings(conf)  # every routing setting, each failure naming its setting

    def _settings_changed(self, changes: Mapping[str, Any]) -> None:
        """``app.conf.update(...)``, ``app.conf[name] = v``, ``app.conf.name = v``: the values
        are validated already; the app re-derives its settings and forgets what it derived
        from them (router, send plans, backend), all or nothing."""
        before = self._given
        self._given = {**before, **changes}
        try:
            self._configure()
        except BaseException:
            self._given = before
            raise

    def config_from_object(self, obj: Any, namespace: str | None = None) -> None:
        """Read settings from a module, object, dict or ``"dotted.path"``; validates at once."""
        self._given.update(config.from_object(obj, namespace))
        self._configure()
        self._apply_fixups(obj)

    def _apply_fixups(self, source: Any) -> None:
        """Give each fixup not installed yet its chance, with where the settings came from."""
        for path in self.fixups:
            if path not in self.installed_fixups:
                installed = _import_path(path, "fixup")(self, source)
                if installed is not None:
                    self.installed_fixups[path] = installed

    @staticmethod
    def _broker_url(conf: config.Settings) -> str:
        return conf.broker_url or config.default_db_url()

    @property
    def broker_url(self) -> str:
        """The broker URL in effect: the setting, or the embedded SQLite file."""
        return self._broker_url(self.conf)

    @property
    def result_backend_url(self) -> str | None:
        """The backend URL in effect; results default to SQLite only when the broker does too."""
        url = self.conf.result_backend
        if url in ("disabled", ""):
            return None
        if url is None and self.conf.broker_url is None:
            return config.default_db_url()
        return url

    # -- wiring -----------------------------------------------------------------------------------
    def create_transport(self) -> Transport:
        """A new, unconnected transport for this app's broker (each process or loop owns one)."""
        return create_transport(self.broker_url, **self.conf.broker_transport_options)

    @property
    def backend(self) -> Backend | None:
        """The result backend, created on first use; ``None`` when results are disabled."""
        if not self._backend_made:
            with self._lock:
                if not self._backend_made:
                    self._backend = self._create_backend()
                    self._backend_made = True
        return self._backend

    def _create_backend(self) -> Backend | None:
        url = self.result_backend_url
        if url is None:
            return None
        from celeriac.results.registry import backend_class

        cls = backend_class(url)
        extra: dict[str, Any] = {}
        if cls.replies:  # rpc:// replies over the broker unless its URL names a server
            extra = {
                "broker_url": self.broker_url,
                "broker_options": self.conf.broker_transport_options,
            }
        return cls(
            url,
            serializer=self.conf.result_serializer,
            accept=self.conf.result_accept_content or self.conf.accept_content,
            expires=self.conf.result_expires,
            serializers=self.codecs.serializers,
            max_bytes=self.conf.result_max_bytes,
            **extra,
            **self.conf.result_backend_transport_options,
        )

    @property
    def result_writer(self) -> ResultWriter | None:
        """This process's write-behind result writer (see :mod:`celeriac.results.writer`)."""
        if self._writer is None and self.backend is not None:
            with self._lock:
                if self._writer is None:
                    self._writer = ResultWriter(self.backend)
        return self._writer

    def flush_results(self, timeout: float | None = 30.0) -> bool:
        """Wait until every result this process queued is stored; False on timeout."""
        return self._writer.flush(timeout) if self._writer is not None else True

    @property
    def router(self) -> Router:
        if self._router is None:
            self._router = Router.from_settings(self.conf)
        return self._router

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            with self._lock:
                if self._producer is None:
                    self._producer = Producer(self)
        return self._producer

    def queues(self, names: Sequence[str] | None = None) -> list[Queue]:
        """The queues a worker consumes: ``names`` (``-Q``, names or aliases), else every
        declared queue, else the default queue."""
        return self.router.worker_queues(names)

    def close(self) -> None:
        """Close connections this app opened in this process."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._producer is not None:
            self._producer.close()
            self._producer = None
        if self._backend is not None:
            self._backend.close()
        self._backend, self._backend_made = None, False
        if self._beat is not None:
            self._beat.close()
            self._beat = None
        if self._control is not None:
            self._control.close()
            self._control = None
        self.close_sent_events()

    # -- tasks ------------------------------------------------------------------------------------
    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> _Task[P, R]: ...

    @overload
    def task(self, fn: Callable[P, R], /) -> _Task[P, R]: ...

    @overload
    def task(self, *, bind: Literal[True], **options: Any) -> BoundTaskDecorator: ...

    @overload
    def task(self, *, bind: Literal[False] = ..., **options: Any) -> TaskDecorator: ...

    def task(self, *args: Any, **options: Any) -> Any:
        """Declare a task: ``@app.task`` or ``@app.task(bind=True, max_retries=5, ...)``.

        An option no core feature or middleware declares fails here, naming it.
        """
        if len(args) > 1 or (args and not callable(args[0])):
            raise TypeError("app.task takes one function, or keyword options only")
        fn: Callable[..., Any] | None = args[0] if args else None
        base = options.pop("base", None)
        unknown = sorted(set(options) - set(self.task_options))
        if unknown:
            raise ImproperlyConfigured(
                f"unknown task option(s) {unknown}; known: {', '.join(sorted(self.task_options))}"
            )

        if options.get("rate_limit") is not None:
            try:
                parse_rate(options["rate_limit"])
            except ImproperlyConfigured as exc:
                raise ImproperlyConfigured(f"task option 'rate_limit': {exc}") from None

        def decorate(func: Callable[..., Any]) -> _Task[Any, Any]:
            task = build_task(self, func, options, base or self.task_base)
            self.register(task)
            return task

        return decorate(fn) if fn is not None else decorate

    @property
    def Task(self) -> type[_Task[Any, Any]]:
        """This app's task base class (``task_cls``), bound to this app: subclass it for
        ``base=`` classes and class-based tasks, whose tasks then belong to this app."""
        if self._task_base is None:
            self._task_base = type(
                "Task", (self.task_cls,), {"bound_app": self, "__module__": __name__}
            )
        return self._task_base

    @property
    def task_base(self) -> type[_Task[Any, Any]] | None:
        """The ``base`` of tasks declared without one: ``task_cls`` when it is not plain Task."""
        return None if self.task_cls is _Task else self.task_cls

    def register_task(self, task: _Task[Any, Any] | type[_Task[Any, Any]]) -> _Task[Any, Any]:
        """Register a task object made elsewhere, such as a class-based task
        (``app.register_task(MyTask())``; a class is instantiated); returns it."""
        if isinstance(task, type):
            task = task()
        if not isinstance(task, _Task):
            raise ImproperlyConfigured(f"register_task takes a Task instance, not {task!r}")
        if "options" not in vars(task):  # its __init__ did not call Task.__init__ (Celery's
            # tasks need none): set the task up now, keeping what its own __init__ set
            _Task.__init__(task, self)
        if task._app is None and type(task).bound_app is None:
            task.app = self
        self.register(task)
        return task

    def attach_shared(self, task: _Task[Any, Any], options: Mapping[str, Any]) -> None:
        """Register this app's own copy of a ``@shared_task`` (see :func:`shared_task`)."""
        unknown = sorted(set(options) - set(self.task_options) - {"base"})
        if unknown:
            raise ImproperlyConfigured(
                f"shared task {task.name!r}: unknown task option(s) {unknown}; "
                f"known: {', '.join(sorted(self.task_options))}"
            )
        if "base" not in options and self.task_base is not None:
            own = build_task(self, task.fn, task.options, self.task_base)
        else:
            own = task.bound_to(self)
        self.tasks[own.name] = own

    def add_periodic_task(
        self,
        schedule: Any,
        sig: Signature | _Task[Any, Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        **opts: Any,
    ) -> str:
        """Celery's ``add_periodic_task``: an entry of ``beat_schedule`` for ``sig`` (a signature
        or a task) on ``schedule``; ``opts`` are send options, or beat's own entry keys
        (``catch_up``, ``misfire_grace``, ``overlap``, ``jitter``, ``expires``, ``paused``).
        Returns the entry's name (``name``, else the signature's repr)."""
        from celeriac.beat.entry import POLICY_KEYS, from_declaration  # only when declaring

        if isinstance(sig, _Task):
            sig = sig.s()
        sig = sig.clone(tuple(args), dict(kwargs or {}))
        key = name or repr(sig)
        # ``expires`` stays a send option, as Celery puts it (the same thing: the slot is sent)
        policy = {k: opts.pop(k) for k in list(opts) if k in POLICY_KEYS and k != "expires"}
        spec = {
            "task": sig.task,
            "schedule": schedule,
            "args": tuple(sig.args),
            "kwargs": dict(sig.kwargs),
            "options": {**sig.options, **opts},
            **policy,
        }
        from_declaration(key, spec)  # a mistake fails here, naming the entry
        self.conf.update(beat_schedule={**(self.conf.beat_schedule or {}), key: spec})
        return key

    @property
    def beat(self) -> BeatAPI:
        """The entries of this app's beats, changed at run time (see :mod:`celeriac.beat.api`)."""
        if self._beat is None:
            self._beat = BeatAPI(self)
        return self._beat

    def _annotate(self, task: _Task[Any, Any]) -> None:
        """Apply ``task_annotations`` (Celery's forms: ``{"name": {...}, "*": {...}}``, an object
        with ``annotate(task)``, a dotted path to one, or a list of these) to ``task``."""
        setting = self.conf.task_annotations
        if not setting:
            return
        for annotation in setting if isinstance(setting, list | tuple) else [setting]:
            if isinstance(annotation, str):
                annotation = _import_path(annotation, "task_annotations")
                if isinstance(annotation, type):
                    annotation = annotation()
            if isinstance(annotation, Mapping):
                for key in ("*", task.name):
                    if key in annotation:
                        task.annotate(annotation[key])
            else:
                values = annotation.annotate(task)
                if values:
                    task.annotate(values)

    def gen_task_name(self, name: str, module: str) -> str:
        """The name of a task declared without ``name=`` (override it in a subclass, as in
        Celery): ``module.function``, with the app's ``main`` for a task declared in the
        ``__main__`` script, so that a worker importing that script by its module name finds it."""
        if module == "__main__" and self.main:
            module = self.main
        return f"{module}.{name}"

    def autodiscover_tasks(
        self,
        packages: imports.Packages = None,
        related_name: str | None = "tasks",
        force: bool = False,
    ) -> None:
        """Find the tasks of these packages (``<package>.tasks``), as Celery's: a list of
        package names, a callable returning them (called at discovery time), or nothing for
        Django's installed apps. Discovery runs when a worker loads the app (with the
        ``include`` and ``imports`` modules), or now with ``force=True``."""
        if force:
            imports.discover(packages, related_name)
        else:
            self._autodiscover.append((packages, related_name))

    def import_default_modules(self) -> None:
        """Import the modules this app names (``include``, ``imports``) and run the pending
        ``autodiscover_tasks``: what a worker does before it consumes, in every process."""
        first = not self._finalized
        if first:
            self._finalized = True
            self.on_configure.send(self)
            self.on_after_configure.send(self, source=self.conf)
        signals.import_modules.send(self)
        imports.import_modules(self.conf.imports, "imports")
        imports.import_modules(self.conf.include, "include")
        pending, self._autodiscover = self._autodiscover, []
        for packages, related_name in pending:
            imports.discover(packages, related_name)
        if self.conf.task_annotations:  # set after some tasks were declared: apply to all now
            for task in self.tasks.values():
                self._annotate(task)
        if first:  # the modules are in: the app is complete
            self.on_after_finalize.send(self)

    def set_default(self) -> None:
        """Make this app the default app (``AsyncResult(id)``, ``@shared_task``, ``current_app()``)
        from now on, whatever apps are created later."""
        set_default_app(self)

    set_current = set_default

    def add_component(self, component: type[Component]) -> None:
        """Run ``component`` in every worker of this app; its ``task_options`` become valid."""
        if not (isinstance(component, type) and issubclass(component, Component)):
            raise ImproperlyConfigured(f"{component!r} is not a Component subclass")
        self.task_options.update(component.task_options)
        self.components.append(component)

    @property
    def control(self) -> Control:
        """Remote control of workers: ``app.control.revoke(task_id, terminate=True)``."""
        if self._control is None:
            self._control = Control(self)
        return self._control

    def register(self, task: _Task[Any, Any]) -> None:
        self._annotate(task)
        existing = self.tasks.get(task.name)
        if existing is not None and existing.fn is not task.fn:
            logger.warning("task %r registered twice; the later one wins", task.name)
        self.tasks[task.name] = task

    def get_task(self, name: str) -> _Task[Any, Any]:
        try:
            return self.tasks[name]
        except KeyError:
            raise NotRegistered(name) from None

    def AsyncResult(self, task_id: str, task_name: str | None = None) -> _result.AsyncResult[Any]:
        return _result.AsyncResult(task_id, self.backend, task_name, self)

    def signature(
        self,
        name: str | Signature | Mapping[str, Any],
        args: Sequence[Any] | None = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        **extra_options: Any,
    ) -> Signature:
        """A signature of a task by name, as Celery's: send options as ``options=`` or as
        keywords (``app.signature("tasks.add", args=(2, 2), countdown=10)``)."""
        return signature(name, args, kwargs, options, app=self, **extra_options)

    def __repr__(self) -> str:
        return f"<Celeriac {self.main or '__main__'} broker={redact_url(self.broker_url)}>"


def _import_path(path: str, what: str) -> Any:
    """The object ``"module:attr"`` or ``"module.attr"`` names; a failure names ``what``."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ImproperlyConfigured(f"{what} {path!r} cannot be imported: {exc}") from None


def _task_class(value: type[_Task[Any, Any]] | str | None) -> type[_Task[Any, Any]]:
    """``task_cls`` as a class: a Task subclass or its ``"module:Class"``/``"module.Class"``."""
    if value is None:
        return _Task
    if isinstance(value, str):
        value = _import_path(value, "task_cls")
    if not (isinstance(value, type) and issubclass(value, _Task)):
        raise ImproperlyConfigured(f"task_cls must be a celeriac Task subclass, not {value!r}")
    return value
