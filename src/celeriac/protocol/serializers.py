"""Serializers by content type, and the accept list that keeps unsafe ones out.

A message says how its body is encoded with a *content type* (``application/json``), not with our
name for the serializer (``json``). The content types are exactly kombu's, so a Celery client and a
celeriac worker read each other's messages:

==========  ==================================  ================
name        content type                        content encoding
==========  ==================================  ================
json        ``application/json``                ``utf-8``
msgpack     ``application/x-msgpack``           ``binary``
yaml        ``application/x-yaml``              ``utf-8``
pickle      ``application/x-python-serialize``  ``binary``
==========  ==================================  ================

json writes ``datetime``, ``date``, ``time``, ``Decimal``, ``UUID`` and ``bytes`` in kombu's
``{"__type__": ..., "__value__": ...}`` envelopes and reads them back as those types (see
:mod:`celeriac.protocol.jsontypes`), so they round-trip, to and from Celery too.

Every serializer is registered, pickle included, because *producing* pickle is a choice of the
sender. What a worker is willing to *read* is decided by the accept list alone (``("json",)`` by
default), checked before a single byte of the body is looked at: pickle runs code when loaded, so a
message from an untrusted producer must be refused, not decoded.

Failures are typed and say why: :class:`EncodeError` on the sending side names the type that could
not be serialized; :class:`~celeriac.errors.ContentDisallowed` names the refused content type and
the accept list; :class:`~celeriac.errors.DecodeError` names the content type and the cause, to
which it is chained. A worker dead-letters a message on ``DecodeError`` and keeps running.

msgpack and yaml are optional bundles. When their module is missing they are remembered as
*unavailable*: using them to send, or listing them in the accept list, raises
:class:`~celeriac.errors.ImproperlyConfigured` naming the ``pip install`` that fixes it. A message
that *arrives* in such a format raises ``DecodeError`` (chained to that ``ImproperlyConfigured``),
so it is dead-lettered with the hint and can be replayed once the bundle is installed.

Their modules are imported the first time the registry is asked about them (by name, by content
type, or for a list of what is registered), not when the registry is built: every app builds
one, yaml alone takes ~15 ms to import, and most apps never use either.
"""

from __future__ import annotations

import codecs
import datetime as dt
import threading
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from celeriac.errors import CeleriacError, ContentDisallowed, DecodeError, ImproperlyConfigured
from celeriac.protocol import jsontypes

JSON = "application/json"
MSGPACK = "application/x-msgpack"
YAML = "application/x-yaml"
PICKLE = "application/x-python-serialize"

#: The two content encodings a serializer may declare: text in UTF-8, or opaque bytes.
CONTENT_ENCODINGS: frozenset[str] = frozenset({"utf-8", "binary"})

#: kombu's pickle protocol: every Python that runs Celery 5 reads it.
PICKLE_PROTOCOL = 4


class EncodeError(CeleriacError, TypeError):
    """An object cannot be serialized; the message names its type and the serializer.

    Also a ``TypeError``, which is what ``json.dumps`` raises for the same mistake, so code written
    against the standard library's behaviour keeps working.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Serializer:
    """One way to turn Python values into bytes and back.

    ``dumps`` and ``loads`` are plain callables, so a user serializer is a one-liner:
    ``Serializer("ujson", "application/x-ujson", "utf-8", my_dumps, my_loads)``.
    ``content_encoding`` is ``"utf-8"`` when the bytes are text (transports may store them as
    such) and ``"binary"`` otherwise.
    """

    name: str
    content_type: str
    content_encoding: str
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]

    def __post_init__(self) -> None:
        if not self.name:
            raise ImproperlyConfigured("a serializer needs a non-empty name")
        if "/" not in self.content_type:
            raise ImproperlyConfigured(
                f"serializer {self.name!r}: content type must look like 'type/subtype', "
                f"not {self.content_type!r}"
            )
        if self.content_encoding not in CONTENT_ENCODINGS:
            raise ImproperlyConfigured(
                f"serializer {self.name!r}: content_encoding must be one of "
                f"{sorted(CONTENT_ENCODINGS)}, not {self.content_encoding!r}"
            )


def bare_content_type(content_type: str) -> str:
    """``"Application/JSON; charset=utf-8"`` -> ``"application/json"``: what lookups compare."""
    return content_type.split(";", 1)[0].strip().lower()


@dataclass(frozen=True, slots=True)
class Unavailable:
    """A built-in codec (serializer or compressor) whose package is not installed, and the
    command that installs it."""

    name: str
    content_type: str
    hint: str
    kind: str = "serializer"

    def error(self) -> ImproperlyConfigured:
        return ImproperlyConfigured(
            f"{self.kind} {self.name!r} ({self.content_type}) needs an optional package: "
            f"{self.hint}"
        )


class SerializerRegistry:
    """Serializers by name, alias and content type; the one place bodies are encoded and decoded.

    Build it with :meth:`with_defaults` and :meth:`register` your own. Registering an existing
    name replaces it, which is how a user swaps in a faster JSON library.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, Serializer] = {}
        self._by_type: dict[str, Serializer] = {}
        self._unavailable: dict[str, Unavailable] = {}
        self._unavailable_types: dict[str, Unavailable] = {}
        # resolve_accept runs for every decoded message; the accept setting rarely changes.
        self._accept_cache: dict[frozenset[str], frozenset[str]] = {}
        #: Built-ins not imported yet (see the module docstring): name -> content type, builder.
        #: An entry leaves only once its outcome is recorded, under the lock, so a thread that
        #: finds it gone finds the serializer (or its absence) too.
        self._pending: dict[str, tuple[str, Callable[[], Serializer]]] = {}
        self._pending_lock = threading.Lock()

    @classmethod
    def with_defaults(cls) -> SerializerRegistry:
        """json, msgpack, yaml and pickle; msgpack and yaml only when their module imports
        (tried when first asked for, see the module docstring)."""
        registry = cls()
        registry.register("json", _json_serializer())
        registry.register("pickle", _pickle_serializer())
        registry._pending["msgpack"] = (MSGPACK, _msgpack_serializer)
        registry._pending["yaml"] = (YAML, _yaml_serializer)
        return registry

    def _load(self, name: str) -> None:
        """Import the pending built-in ``name``: register it, or remember it as unavailable.

        The outcome is the one an eager registration in :meth:`with_defaults` would have had:
        a content type registered since then keeps its serializer."""
        with self._pending_lock:
            pending = self._pending.get(name)
            if pending is None:  # another thread loaded it meanwhile
                return
            content_type, build = pending
            try:
                serializer = build()
            except ImportError:
                missing = Unavailable(name, content_type, f'pip install "celeriac[{name}]"')
                self._unavailable[name] = missing
                if content_type not in self._by_type:
                    self._unavailable_types[content_type] = missing
            else:
                self._by_name[name] = serializer
                self._by_type.setdefault(bare_content_type(serializer.content_type), serializer)
            self._accept_cache.clear()
            del self._pending[name]

    def _load_type(self, content_type: str) -> None:
        """Import the pending built-in that reads the bare ``content_type``, if one does."""
        for name, (pending_type, _) in list(self._pending.items()):
            if pending_type == content_type:
                self._load(name)

    def _load_all(self) -> None:
        """Import every pending built-in: an error message lists all that is registered."""
        for name in list(self._pending):
            self._load(name)

    def register(self, name: str, serializer: Serializer, aliases: Iterable[str] = ()) -> None:
        """Make ``serializer`` available under ``name`` and ``aliases`` and its content type."""
        names = [name, *aliases]
        if not all(names):
            raise ImproperlyConfigured(f"serializer names must be non-empty: {names!r}")
        for each in names:  # a built-in replaced: load it first, so that the later one wins
            if each in self._pending:
                self._load(each)
        content_type = bare_content_type(serializer.content_type)
        for each in names:
            self._by_name[each] = serializer
            self._unavailable.pop(each, None)
        self._by_type[content_type] = serializer
        self._unavailable_types.pop(content_type, None)
        self._accept_cache.clear()

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str) and name in self._pending:
            self._load(name)
        return name in self._by_name

    def get(self, name: str) -> Serializer:
        """The serializer registered as ``name``, or ImproperlyConfigured saying what exists."""
        found = self._by_name.get(name)
        if found is not None:
            return found
        if name in self._pending:
            self._load(name)
            found = self._by_name.get(name)
            if found is not None:
                return found
        self._load_all()
        # read again: another thread may have loaded it (or found it missing) between the
        # lookups above; each load fills these tables before it leaves the pending one
        found = self._by_name.get(name)
        if found is not None:
            return found
        missing = self._unavailable.get(name)
        if missing is not None:
            raise missing.error()
        raise ImproperlyConfigured(
            f"unknown serializer {name!r}; registered: {sorted(self._by_name)}"
        )

    def name_for(self, content_type: str) -> str:
        """Our name for a content type (``"application/json"`` -> ``"json"``)."""
        return self._for_type(content_type).name

    def _for_type(self, content_type: str) -> Serializer:
        found = self._by_type.get(content_type)  # already bare, as a sender writes it
        if found is not None:
            return found
        bare = bare_content_type(content_type)
        found = self._by_type.get(bare)
        if found is not None:
            return found
        if self._pending:
            self._load_type(bare)
            found = self._by_type.get(bare)
            if found is not None:
                return found
        self._load_all()
        found = self._by_type.get(bare)  # read again, as in get()
        if found is not None:
            return found
        missing = self._unavailable_types.get(bare)
        if missing is not None:
            error = missing.error()
            raise DecodeError(str(error)) from error
        raise DecodeError(
            f"no serializer for content type {content_type!r}; known: {sorted(self._by_type)}"
        )

    def resolve_accept(self, accept: Collection[str]) -> frozenset[str]:
        """Normalize an accept list of names and content types into bare content types.

        Entries with a ``/`` are content types and are kept even if nothing decodes them yet (a
        serializer may be registered later); anything else must be a registered name. Run it at
        start-up so that a typo in ``accept_content`` fails there, not on the first message.
        """
        key = frozenset(accept)
        cached = self._accept_cache.get(key)
        if cached is not None:
            return cached
        resolved: set[str] = set()
        unknown: list[str] = []
        for entry in key:
            if entry in self._pending:
                self._load(entry)
            if "/" in entry:
                resolved.add(bare_content_type(entry))
            elif entry in self._by_name:
                resolved.add(bare_content_type(self._by_name[entry].content_type))
            elif entry in self._unavailable:
                raise self._unavailable[entry].error()
            else:
                unknown.append(entry)
        if unknown:
            self._load_all()
            raise ImproperlyConfigured(
                f"accept_content names unknown serializers {sorted(unknown)}; "
                f"registered: {sorted(self._by_name)}"
            )
        result = frozenset(resolved)
        self._accept_cache[key] = result
        return result

    def ensure_accepted(self, content_type: str, accept: Collection[str]) -> None:
        """Raise ContentDisallowed unless ``content_type`` is in the accept list.

        Public so that a caller can refuse a message before paying for anything else (the codec
        checks before decompressing, so a disallowed sender cannot make a worker inflate a bomb).
        """
        resolved = self.resolve_accept(accept)
        if content_type not in resolved and bare_content_type(content_type) not in resolved:
            raise ContentDisallowed(
                f"refusing content type {content_type!r}: not in accept_content {sorted(accept)!r}"
            )

    def dumps(self, obj: Any, name: str) -> tuple[str, str, bytes]:
        """Serialize ``obj`` with ``name``; returns ``(content_type, content_encoding, data)``."""
        serializer = self.get(name)
        return serializer.content_type, serializer.content_encoding, encode_with(serializer, obj)

    def loads(
        self,
        data: bytes,
        content_type: str,
        content_encoding: str,
        accept: Collection[str],
    ) -> Any:
        """Deserialize a body, after checking its content type against ``accept``.

        ``accept`` holds names or content types (``"json"`` or ``"application/json"``).
        """
        self.ensure_accepted(content_type, accept)
        return self.decode(data, content_type, content_encoding)

    def decode(self, data: bytes, content_type: str, content_encoding: str) -> Any:
        """:meth:`loads` without the accept check, for a caller that made it already (the body
        codec checks before it decompresses; checking twice cost a third of a small body's
        decoding)."""
        serializer = self._for_type(content_type)
        if serializer.content_encoding == "utf-8" and content_encoding != "utf-8":
            data = _to_utf8(data, content_encoding, content_type)
        try:
            return serializer.loads(data)
        except Exception as exc:  # every decoder has its own error types; all mean "bad body"
            raise DecodeError(
                f"cannot decode {content_type} body ({len(data)} bytes): "
                f"{type(exc).__name__}: {exc}"
            ) from exc


def encode_with(serializer: Serializer, obj: Any) -> bytes:
    """``serializer.dumps(obj)``, any failure raised as :class:`EncodeError` naming the type.

    For a caller that looked the serializer up once for many values (the body encoder of a
    batch); :meth:`SerializerRegistry.dumps` is the lookup and this.
    """
    try:
        return serializer.dumps(obj)
    except EncodeError:
        raise
    except Exception as exc:  # any failure of a (possibly user) serializer is an encode error
        raise EncodeError(
            f"cannot serialize {type(obj).__name__} with {serializer.name!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _to_utf8(data: bytes, content_encoding: str, content_type: str) -> bytes:
    """Text bodies in another charset (rare, but legal for kombu) are re-encoded to UTF-8."""
    encoding = (content_encoding or "utf-8").lower()
    if encoding in {"utf-8", "utf8", "binary", "ascii-8bit", "ascii"}:
        return data
    try:
        return codecs.decode(data, encoding).encode("utf-8")
    except LookupError as exc:
        raise DecodeError(
            f"{content_type} body has unknown content encoding {content_encoding!r}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{content_type} body is not valid {content_encoding}: {exc}") from exc


# --- json ---------------------------------------------------------------------------------------


_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
_DASH, _UNDERSCORE = jsontypes.DASH, jsontypes.UNDERSCORE  # why one byte: see jsontypes.DASH


def _json_dumps(obj: Any) -> bytes:
    """orjson, with kombu's envelopes for the types JSON lacks (see :mod:`.jsontypes`).

    On the hot path, a plain body costs orjson plus one ``memchr`` for a dash.
    """
    try:
        data = orjson.dumps(obj, default=jsontypes.encode_special, option=_JSON_OPTIONS)
        if _DASH in data and jsontypes.may_hold_uuid(data):  # no dash, no UUID: one memchr
            # orjson wrote some UUID as bare text, maybe: wrap them and write again
            data = orjson.dumps(
                jsontypes.wrap_uuids(obj), default=jsontypes.encode_special, option=_JSON_OPTIONS
            )
    except TypeError as exc:  # orjson wraps what the default hook raised; surface that text
        if isinstance(exc.__cause__, TypeError):
            raise EncodeError(str(exc.__cause__)) from None
        raise EncodeError(f"json cannot serialize {type(obj).__name__}: {exc}") from exc
    return data


def _json_loads(data: bytes) -> Any:
    value = orjson.loads(data)
    if type(data) is bytes and _UNDERSCORE not in data:  # no "_", no envelope: one memchr
        return value
    if jsontypes.may_hold_envelope(data):
        return jsontypes.unwrap_envelopes(value)
    return value


def _json_serializer() -> Serializer:
    """kombu's json, written and read by orjson: tuples become lists, non-str dict keys strings;
    datetime, date, time, Decimal, UUID and bytes keep their types (kombu's envelopes)."""
    return Serializer("json", JSON, "utf-8", _json_dumps, _json_loads)


# --- msgpack ------------------------------------------------------------------------------------


def _msgpack_default(obj: Any) -> Any:
    """Mirror json's conversions so one task gets the same arguments whatever the serializer.

    Dates and times travel as ISO-8601 strings, not as msgpack's timestamp extension: kombu
    packs without a default hook (a Celery producer cannot send them at all) and unpacks without
    a timestamp hook, so a Celery worker would otherwise receive ``msgpack.Timestamp`` objects.
    Unlike json's envelopes, they come back as strings.
    """
    import decimal  # imported on the first value msgpack cannot pack, not by every process

    if isinstance(obj, dt.datetime | dt.date | dt.time):
        return obj.isoformat()
    if isinstance(obj, decimal.Decimal | uuid.UUID):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return list(obj)
    raise EncodeError(f"msgpack cannot serialize an object of type {type(obj).__qualname__}")


def _msgpack_serializer() -> Serializer:
    """msgpack as kombu uses it: ``use_bin_type=True`` to pack, ``raw=False`` to unpack.

    Map keys must be str or bytes to be read back (msgpack's ``strict_map_key``, kept on like
    kombu's, so what we accept a Celery worker accepts too).
    """
    import msgpack

    def dumps(obj: Any) -> bytes:
        packed: bytes = msgpack.packb(obj, use_bin_type=True, default=_msgpack_default)
        return packed

    def loads(data: bytes) -> Any:
        return msgpack.unpackb(data, raw=False)

    return Serializer("msgpack", MSGPACK, "binary", dumps, loads)


# --- yaml ---------------------------------------------------------------------------------------


def _yaml_serializer() -> Serializer:
    """PyYAML's *safe* dumper and loader only: the full loader can build arbitrary objects."""
    import yaml

    def dumps(obj: Any) -> bytes:
        return yaml.safe_dump(obj, allow_unicode=True).encode("utf-8")

    def loads(data: bytes) -> Any:
        return yaml.safe_load(data)

    return Serializer("yaml", YAML, "utf-8", dumps, loads)


# --- pickle -------------------------------------------------------------------------------------


# pickle is registered in every app and used by few: imported by the first call, not at start-up.


def _pickle_dumps(obj: Any) -> bytes:
    import pickle

    return pickle.dumps(obj, protocol=PICKLE_PROTOCOL)


def _pickle_loads(data: bytes) -> Any:
    import pickle

    return pickle.loads(data)  # only reached when "pickle" is in the accept list


def _pickle_serializer() -> Serializer:
    """Registered so it can be *sent*; reading it still needs ``pickle`` in the accept list."""
    return Serializer("pickle", PICKLE, "binary", _pickle_dumps, _pickle_loads)


__all__ = [
    "CONTENT_ENCODINGS",
    "JSON",
    "MSGPACK",
    "PICKLE",
    "YAML",
    "EncodeError",
    "Serializer",
    "SerializerRegistry",
    "bare_content_type",
    "encode_with",
]
