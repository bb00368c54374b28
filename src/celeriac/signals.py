"""Signals: light hooks into the worker's and the tasks' lives, with Celery's names and arguments.

A receiver is a plain (sync) function that takes keyword arguments and ``**kwargs`` (so that an
argument added later does not break it)::

    from celeriac.signals import task_prerun

    @task_prerun.connect
    def started(sender: Task, task_id: str, **kwargs: Any) -> None:
        log.info("starting %s[%s]", sender.name, task_id)

    @task_failure.connect(sender=fetch)            # only for this task
    def fetch_failed(sender: Task, exception: BaseException, **kwargs: Any) -> None: ...

Every receiver is also given ``signal`` (the :class:`Signal`) and ``sender``. ``sender=`` at
connect time filters by identity (``sender is``); a string matches a sender whose ``name`` equals
it (a task's name), so a receiver can be connected before the task is declared.

When and where each signal is sent (the worker's *main process* runs one asyncio event loop that
fetches and settles messages; tasks run in the *pool*: a thread of the threads pool, the solo
thread, or a prefork child process):

==========================  ====================================================================
``worker_init``             main process, before the worker connects to the broker.
                            ``sender`` = the :class:`~celeriac.worker.worker.Worker`.
``worker_ready``            main process, on the event loop, once the worker consumes.
``worker_shutdown``         main process, after the pool has stopped (warm or cold).
``worker_process_init``     in each prefork child, after the app is imported, before its first
                            task. ``sender`` = ``None``. Open per-process resources here
                            (database connections must not cross a ``fork``).
``task_prerun``             in the pool, just before the task's body runs.
``task_postrun``            in the pool, after the body, whatever the outcome (``state``).
``task_success``            in the pool, when the task returned (``result``).
``task_failure``            in the pool, when the task raised and will not be retried.
``task_retry``              in the pool, when the task is to be retried (``reason``).
``task_revoked``            main process, on the event loop, when a revoked or expired task is
                            dropped or a running one terminated.
``task_rejected``           main process, on the event loop, for a message the worker cannot run
                            (unknown task, undecodable body). ``sender`` = ``None``.
==========================  ====================================================================

So with prefork, the ``task_*`` signals of a running task fire **in the child**: a receiver
connected in the parent after the fork never hears them, and state a receiver keeps lives in that
child. Connect receivers at import time, in the module that declares the tasks or the app.

A receiver runs inline, in the sending thread, on the task's or the event loop's time: it must be
fast and must not block. Above all, the main-process signals run *on the event loop*, where a
slow receiver stalls fetching and acking for every task. Hand slow work to a task or a queue.

A receiver that raises is logged (with its traceback) and does not stop the other receivers, the
task or the worker; :meth:`Signal.send` returns its exception as its result.

Receivers are held by **weak reference** by default, so that connecting an object's method does
not keep the object alive; a lambda or a function defined inside another function would therefore
vanish at once: connect those with ``weak=False``.
"""

from __future__ import annotations

import inspect
import logging
import threading
import weakref
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

__all__ = [
    "Receiver",
    "Signal",
    "after_task_publish",
    "before_task_publish",
    "task_failure",
    "task_postrun",
    "task_prerun",
    "task_rejected",
    "task_retry",
    "task_revoked",
    "task_success",
    "worker_init",
    "worker_process_init",
    "worker_ready",
    "worker_shutdown",
]

logger = logging.getLogger("celeriac.signals")

Receiver = Callable[..., Any]
R = TypeVar("R", bound=Receiver)


def _receiver_key(receiver: Receiver) -> Hashable:
    """Identity of a receiver: a bound method is (its object, its function), as each access
    to ``obj.method`` makes a new bound-method object."""
    if inspect.ismethod(receiver):
        return (id(receiver.__self__), id(receiver.__func__))
    return id(receiver)


def _sender_key(sender: Any) -> Hashable:
    if sender is None:
        return None
    if isinstance(sender, str):
        return ("name", sender)
    return id(sender)


def _strong(value: Any) -> Callable[[], Any]:
    return lambda: value


@dataclass(frozen=True, slots=True)
class _Entry:
    """One connection. ``receiver()``/``sender()`` return ``None`` once the referent died."""

    key: tuple[Hashable, Hashable]
    receiver: Callable[[], Receiver | None]
    sender: Callable[[], Any] | None  # None: any sender
    sender_name: str | None  # connected with sender="task.name"

    def matches(self, sender: Any) -> bool:
        if self.sender_name is not None:
            name = sender if isinstance(sender, str) else getattr(sender, "name", None)
            return name == self.sender_name
        if self.sender is None:
            return True
        wanted = self.sender()
        return wanted is not None and wanted is sender

    def alive(self) -> bool:
        if self.receiver() is None:
            return False
        return self.sender is None or self.sender() is not None


class Signal:
    """A named hook: receivers :meth:`connect` to it, the worker :meth:`send` s it.

    Thread-safe: connecting and disconnecting take a lock and replace the tuple of entries, so
    :meth:`send` reads one tuple without locking, and costs next to nothing with no receivers
    (it runs around every task).
    """

    def __init__(
        self, name: str, providing_args: Iterable[str] = (), doc: str | None = None
    ) -> None:
        self.name = name
        #: The keyword arguments :meth:`send` passes besides ``signal`` and ``sender``.
        self.providing_args = frozenset(providing_args)
        if doc is not None:
            self.__doc__ = doc
        self._lock = threading.Lock()
        self._entries: tuple[_Entry, ...] = ()
        # Set from weakref callbacks, which may run in any thread at any allocation (even while
        # this thread holds the lock): they only raise this flag; pruning happens under the lock.
        self._dead = False

    def __repr__(self) -> str:
        return f"<Signal {self.name}>"

    # -- connecting -----------------------------------------------------------------------------
    @overload
    def connect(
        self,
        receiver: R,
        *,
        sender: Any = None,
        weak: bool = True,
        dispatch_uid: Hashable | None = None,
    ) -> R: ...

    @overload
    def connect(
        self,
        receiver: None = None,
        *,
        sender: Any = None,
        weak: bool = True,
        dispatch_uid: Hashable | None = None,
    ) -> Callable[[R], R]: ...

    def connect(
        self,
        receiver: Receiver | None = None,
        *,
        sender: Any = None,
        weak: bool = True,
        dispatch_uid: Hashable | None = None,
    ) -> Any:
        """Connect ``receiver``; usable bare (``@sig.connect``) or called (``@sig.connect(...)``).

        ``sender``: only hear sends from this object (or, for a string, an object of that
        ``name``). ``weak``: hold the receiver by weak reference (a bound method through
        :class:`weakref.WeakMethod`). ``dispatch_uid``: a key that makes connecting twice (say,
        a module imported under two names) a no-op. Connecting the same receiver for the same
        sender twice is a no-op too. Returns the receiver, so it can decorate.
        """
        if receiver is None:

            def decorate(fn: R) -> R:
                self._connect(fn, sender, weak, dispatch_uid)
                return fn

            return decorate
        self._connect(receiver, sender, weak, dispatch_uid)
        return receiver

    def _connect(
        self, receiver: Receiver, sender: Any, weak: bool, dispatch_uid: Hashable | None
    ) -> None:
        if not callable(receiver):
            raise TypeError(f"{self.name}: receiver {receiver!r} is not callable")
        if inspect.iscoroutinefunction(receiver):
            raise TypeError(
                f"{self.name}: receiver {receiver!r} is async; signals call receivers inline "
                "and cannot await them"
            )
        key = dispatch_uid if dispatch_uid is not None else _receiver_key(receiver)
        entry_key = (key, _sender_key(sender))
        ref = self._receiver_ref(receiver) if weak else _strong(receiver)
        sender_ref: Callable[[], Any] | None = None
        sender_name = sender if isinstance(sender, str) else None
        if sender is not None and sender_name is None:
            try:
                sender_ref = weakref.ref(sender, self._flag_dead)
            except TypeError:  # not weak-referenceable (an int, a tuple): hold it
                sender_ref = _strong(sender)
        entry = _Entry(entry_key, ref, sender_ref, sender_name)
        with self._lock:
            live = self._live_entries()
            if any(e.key == entry_key for e in live):
                self._entries = live
                return
            self._entries = (*live, entry)

    def _receiver_ref(self, receiver: Receiver) -> Callable[[], Receiver | None]:
        try:
            if inspect.ismethod(receiver):
                return weakref.WeakMethod(receiver, self._flag_dead)
            return weakref.ref(receiver, self._flag_dead)
        except TypeError:
            # Builtins and some C callables take no weak reference; they live for the whole
            # process anyway, so holding them costs nothing.
            return _strong(receiver)

    def _flag_dead(self, _ref: object) -> None:
        self._dead = True

    def _live_entries(self) -> tuple[_Entry, ...]:
        """Entries without the dead ones (caller holds the lock)."""
        self._dead = False
        return tuple(e for e in self._entries if e.alive())

    def disconnect(
        self,
        receiver: Receiver | None = None,
        sender: Any = None,
        dispatch_uid: Hashable | None = None,
    ) -> bool:
        """Undo a :meth:`connect` made with the same ``sender`` (and ``dispatch_uid`` if one was
        given, in which case ``receiver`` may be omitted). Returns whether anything was removed."""
        if dispatch_uid is not None:
            key: Hashable = dispatch_uid
        elif receiver is not None:
            key = _receiver_key(receiver)
        else:
            raise TypeError(f"{self.name}.disconnect() needs a receiver or a dispatch_uid")
        entry_key = (key, _sender_key(sender))
        with self._lock:
            live = self._live_entries()
            kept = tuple(e for e in live if e.key != entry_key)
            self._entries = kept
        return len(kept) != len(live)

    # -- sending --------------------------------------------------------------------------------
    def send(self, sender: Any, /, **kwargs: Any) -> list[tuple[Receiver, Any]]:
        """Call every live receiver that listens to ``sender``; returns ``(receiver, result)``
        pairs, where a receiver that raised has its exception as its result (and was logged)."""
        entries = self._entries
        if not entries:
            return []
        if self._dead:
            with self._lock:
                entries = self._entries = self._live_entries()
        responses: list[tuple[Receiver, Any]] = []
        for entry in entries:
            if not entry.matches(sender):
                continue
            receiver = entry.receiver()
            if receiver is None:
                continue
            try:
                result = receiver(signal=self, sender=sender, **kwargs)
            except Exception as exc:
                logger.exception(
                    "signal %s: receiver %s raised for sender %.200r",
                    self.name,
                    getattr(receiver, "__qualname__", receiver),
                    sender,
                )
                result = exc
            responses.append((receiver, result))
        return responses

    # -- introspection --------------------------------------------------------------------------
    @property
    def receivers(self) -> list[Receiver]:
        """The live receivers, in connection order (for every sender)."""
        found = [e.receiver() for e in self._entries if e.alive()]
        return [r for r in found if r is not None]

    def has_receivers(self, sender: Any = None) -> bool:
        """Whether a send from ``sender`` (any sender when ``None``) would reach a receiver:
        lets a sender skip building costly arguments that nobody would read."""
        return any(e.alive() and (sender is None or e.matches(sender)) for e in self._entries)


# -- the worker's signals -----------------------------------------------------------------------
worker_init = Signal(
    "worker_init",
    doc="Main process, before connecting to the broker. sender: the Worker.",
)
worker_ready = Signal(
    "worker_ready",
    doc="Main process, on the event loop, once the worker consumes. sender: the Worker.",
)
worker_shutdown = Signal(
    "worker_shutdown",
    doc="Main process, after the pool stopped (warm or cold). sender: the Worker.",
)
worker_process_init = Signal(
    "worker_process_init",
    doc="Each prefork child, after importing the app, before its first task. sender: None.",
)

# -- the producer's signals ----------------------------------------------------------------------
before_task_publish = Signal(
    "before_task_publish",
    providing_args=(
        "body",
        "exchange",
        "routing_key",
        "headers",
        "properties",
        "declare",
        "retry_policy",
    ),
    doc=(
        "In the sending process, just before a task message is published. sender: the task's "
        "name (str). ``body``: the message body (args, kwargs, embed); ``headers`` and "
        "``properties``: the message's, which a receiver may change in place; ``declare``: the "
        "queues declared with the send; ``retry_policy``: the publish retry policy or None."
    ),
)
after_task_publish = Signal(
    "after_task_publish",
    providing_args=("body", "exchange", "routing_key", "headers"),
    doc=(
        "In the sending process, once a task message was handed to the broker. sender: the "
        "task's name (str); ``body``, ``exchange``, ``routing_key`` and ``headers`` (id, task, "
        "...) as published."
    ),
)

# -- the tasks' signals -------------------------------------------------------------------------
task_prerun = Signal(
    "task_prerun",
    providing_args=("task_id", "task", "args", "kwargs"),
    doc="In the pool, before the task's body. sender: the Task (also given as ``task``).",
)
task_postrun = Signal(
    "task_postrun",
    providing_args=("task_id", "task", "args", "kwargs", "retval", "state"),
    doc=(
        "In the pool, after the task's body whatever its outcome. ``retval``: the return value "
        "or the exception; ``state``: the outcome's state (SUCCESS, FAILURE, RETRY...)."
    ),
)
task_success = Signal(
    "task_success",
    providing_args=("result",),
    doc="In the pool, when the task returned. sender: the Task; ``result``: its return value.",
)
task_failure = Signal(
    "task_failure",
    providing_args=("task_id", "exception", "args", "kwargs", "traceback", "einfo"),
    doc=(
        "In the pool, when the task raised and will not be retried. ``traceback``: the "
        "exception's traceback object; ``einfo``: the formatted traceback (str) or None."
    ),
)
task_retry = Signal(
    "task_retry",
    providing_args=("request", "reason", "einfo"),
    doc=(
        "In the pool, when the task is to be retried. ``request``: the task's Request; "
        "``reason``: the exception (or Retry) behind it; ``einfo``: formatted traceback or None."
    ),
)
task_revoked = Signal(
    "task_revoked",
    providing_args=("request", "terminated", "signum", "expired"),
    doc=(
        "Main process, on the event loop, when a revoked or expired task is dropped or a running "
        "one terminated. ``signum``: the signal used to terminate, or None."
    ),
)
task_rejected = Signal(
    "task_rejected",
    providing_args=("message", "exc"),
    doc=(
        "Main process, on the event loop, for a message the worker cannot run (unknown task, "
        "undecodable). sender: None; ``message``: the raw message; ``exc``: why."
    ),
)
