"""The :class:`Signal` class: receivers connect to a signal, the worker and the app send it.

The signals themselves, with Celery's names and arguments and where each is sent, are in
:mod:`celeriac.signals`. This module is the mechanism: weak or strong receivers, filtering by
sender (by identity, or by name for a string), isolation of a receiver that raises, and a send
that costs next to nothing when nobody listens (it runs around every task).
"""

from __future__ import annotations

import inspect
import logging
import threading
import weakref
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

__all__ = ["Receiver", "Signal"]

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
