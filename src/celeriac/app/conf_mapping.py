"""``app.conf`` as Celery users use it: a mapping whose every write is validated.

Celery's ``app.conf`` is a mutable mapping with attribute access: ``conf.update(...)``,
``conf["task_routes"] = ...``, ``conf.task_routes = ...``, ``conf.get(...)``, ``"x" in conf``,
``conf.humanize()``. :class:`SettingsMapping` gives celeriac's typed settings the same surface
without slowing reads: a setting's value is a plain slot read. A setting without effect here, or
an old upper-case name, reads through a property that :func:`add_name_properties` puts on the
class for each such name: there is no ``__getattr__``, whose mere presence makes every attribute
read of the class take a slower path (about 2.5 times slower, measured).

Every write goes through one path (:meth:`SettingsMapping._write`): the whole batch is
validated first, so a bad value or an unknown name raises ImproperlyConfigured naming it and
changes nothing. Then, when an owner set :attr:`~SettingsMapping.listener`, the owner is told
the validated changes and applies them itself (the app re-derives every setting, environment
variables winning, and writes them back with :meth:`~SettingsMapping.assign`, so that what it
caches from its settings is rebuilt); without a listener, the changes apply at once.

The subclass (:class:`celeriac.app.config.Settings`) provides the fields and the hooks that
know the settings (validation, names, defaults), so this module knows only the mapping.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

from celeriac.app.celery_settings import NO_EFFECT_DEFAULTS
from celeriac.utils.urls import redact_url

#: Setting (or option) names whose values are secrets, shown masked by ``table``/``humanize``.
#: Celery's list, except that a routing key or a key prefix is no secret.
HIDDEN = re.compile(
    r"API|TOKEN|SECRET|PASS|SIGNATURE|DATABASE|(?<!ROUTING_)KEY(?!_?PREFIX)", re.IGNORECASE
)
MASK = "********"

Listener = Callable[[dict[str, Any]], None]


class SettingsMapping(MutableMapping[str, Any]):
    """The mapping side of the settings; see the module's docstring."""

    __slots__ = ("_kept", "listener")

    #: Told the validated changes of every user write instead of applying them; see the module.
    listener: Listener | None
    #: Values of the settings that have no effect in celeriac, kept so they read back.
    _kept: dict[str, Any]

    # -- hooks the settings class provides -------------------------------------------------------
    def _validated(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Current names to checked values; raises ImproperlyConfigured for any bad one."""
        raise NotImplementedError

    def _lookup(self, name: str) -> str | None:
        """The current name ``name`` stands for, or None when it is no setting."""
        raise NotImplementedError

    def _defaults(self) -> Mapping[str, Any]:
        """Every current name, in order, to its default."""
        raise NotImplementedError

    def _fresh(self) -> SettingsMapping:
        raise NotImplementedError

    @staticmethod
    def _suggest(name: str) -> str:
        raise NotImplementedError

    # -- writing ----------------------------------------------------------------------------------
    def assign(self, values: Mapping[str, Any]) -> None:
        """Set already validated values by their current names: no checks, no listener."""
        kept, setter = self._kept, object.__setattr__
        for name, value in values.items():
            if name in NO_EFFECT_DEFAULTS:
                kept[name] = value
            else:
                setter(self, name, value)

    def _write(self, values: Mapping[str, Any]) -> None:
        checked = self._validated(values)
        if not checked:
            return
        listener = self.listener
        if listener is None:
            self.assign(checked)
        else:
            listener(checked)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "listener" or name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self._write({name: value})

    def __setitem__(self, name: str, value: Any) -> None:
        self._write({name: value})

    def __delitem__(self, name: str) -> None:
        """Back to the default, as removing a change from Celery's conf does."""
        found = self._lookup(name)
        if found is None:
            raise KeyError(name)
        self._write({found: copy.copy(self._defaults()[found])})

    def update(self, mapping: Any = None, /, **more: Any) -> None:
        """Set several settings at once: all of them, or (on any bad one) none."""
        values: dict[str, Any] = {} if mapping is None else dict(mapping)
        values.update(more)
        self._write(values)

    def setdefault(self, name: str, default: Any = None) -> Any:
        """The value of ``name``. As in Celery, every setting is present (with its default),
        so nothing is set; a name that is no setting raises ImproperlyConfigured."""
        found = self._lookup(name)
        if found is None:
            self._validated({name: default})  # raises, naming it
        return self[name]

    def clear(self) -> None:
        """Every setting back to its default, as ``clear()`` on Celery's conf."""
        defaults = self._defaults()
        self._write({name: copy.copy(defaults[name]) for name in self.changed()})

    def popitem(self) -> tuple[str, Any]:
        raise TypeError("settings cannot be popped one by one: use del conf[name]")

    # -- reading ----------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        found = self._lookup(name) if isinstance(name, str) else None
        if found is None:
            raise KeyError(name)
        if found in NO_EFFECT_DEFAULTS:
            kept = self._kept
            return kept[found] if found in kept else copy.copy(NO_EFFECT_DEFAULTS[found])
        return object.__getattribute__(self, found)

    def get(self, name: str, default: Any = None) -> Any:
        found = self._lookup(name) if isinstance(name, str) else None
        return default if found is None else self[found]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._lookup(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._defaults())

    def __len__(self) -> int:
        return len(self._defaults())

    def as_dict(self) -> dict[str, Any]:
        """Every setting by its current name, the ones without effect included (their default
        until set), so that ``other.assign(conf.as_dict())`` makes ``other`` equal to ``conf``."""
        kept = self._kept
        return {
            name: (
                (kept[name] if name in kept else copy.copy(default))
                if name in NO_EFFECT_DEFAULTS
                else object.__getattribute__(self, name)
            )
            for name, default in self._defaults().items()
        }

    def changed(self) -> dict[str, Any]:
        """The settings whose value is not their default: what the user set."""
        defaults = self._defaults()
        return {
            name: value
            for name, value in self.as_dict().items()
            if not _same(value, defaults[name])
        }

    def without_defaults(self) -> dict[str, Any]:
        """Celery's name for :meth:`changed`."""
        return self.changed()

    def value_set_for(self, name: str) -> bool:
        """Whether ``name`` (any name Celery accepts) was given a value other than its default."""
        found = self._lookup(name)
        return found is not None and found in self.changed()

    def copy(self) -> SettingsMapping:
        """A detached copy (no listener), as ``conf.copy()`` in Celery."""
        twin = self._fresh()
        twin.assign(copy.copy(self.as_dict()))
        return twin

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), self.as_dict()))

    # -- showing ----------------------------------------------------------------------------------
    def table(self, with_defaults: bool = False, censored: bool = True) -> dict[str, Any]:
        """The settings that differ from their defaults (or all of them), secrets masked and
        passwords in URLs replaced, as Celery's ``conf.table()``."""
        values = dict(self.items()) if with_defaults else self.changed()
        if not censored:
            return values
        return {name: _censor(name, value) for name, value in values.items()}

    def humanize(self, with_defaults: bool = False, censored: bool = True) -> str:
        """``name: value`` lines of :meth:`table`, for a bug report or a start-up banner."""
        import pprint  # only for a report: most processes never show their settings

        return "\n".join(
            f"{name}: {pprint.pformat(value, width=50)}"
            for name, value in self.table(with_defaults, censored).items()
        )

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.table().items())
        return f"{type(self).__name__}({shown})"


def add_name_properties(cls: type[SettingsMapping], names: Mapping[str, str]) -> None:
    """Give ``cls`` a property per name (a setting without a slot, or an old name) that reads
    and writes the setting it stands for, validated as any other write."""
    for attribute, name in names.items():
        if hasattr(cls, attribute):  # a method or a field: the name would hide it
            raise TypeError(f"{cls.__name__}.{attribute} exists already")
        setattr(cls, attribute, _name_property(name))


def _name_property(name: str) -> property:
    def read(self: SettingsMapping) -> Any:
        return self[name]

    def write(self: SettingsMapping, value: Any) -> None:
        self._write({name: value})

    return property(read, write, doc=f"The setting {name!r}.")


def _same(value: Any, default: Any) -> bool:
    try:
        return bool(value == default) and type(value) is type(default)
    except Exception:  # a user object whose == fails is not the default
        return False


def _censor(name: Any, value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _censor(key, inner) for key, inner in value.items()}
    if isinstance(name, str) and HIDDEN.search(name) and value is not None:
        return MASK
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return value


def _restore(cls: type[SettingsMapping], values: dict[str, Any]) -> SettingsMapping:
    settings = cls()
    settings.assign(values)
    return settings
