"""The Python types JSON carries inside kombu's ``{"__type__": ..., "__value__": ...}`` envelope.

JSON has no dates, decimals, UUIDs or bytes. kombu (so Celery) sends them wrapped in a two-key
object and unwraps any object with exactly those two keys when it reads a body back; a Celery
worker hands ``process(when=datetime(...))`` a ``datetime``, not a string. We write and read the
same envelopes, so a task argument or a result keeps its type across celeriac, across Celery, and
between the two:

=================  ==============  ==========================================================
Python type        ``__type__``    ``__value__``
=================  ==============  ==========================================================
``datetime``       ``datetime``    ``isoformat()`` (checked before ``date``: it is one)
``date``           ``date``        ``isoformat()``
``time``           ``time``        ``isoformat()``
``Decimal``        ``decimal``     ``str()`` (no float rounding)
``UUID``           ``uuid``        ``{"hex": <32 hex digits>}``
``bytes``          ``bytes``       the text, when the bytes are valid UTF-8
``bytes``          ``base64``      base64 text, otherwise
=================  ==============  ==========================================================

An object with a ``__json__()`` method is sent as what that returns, as kombu does.
:func:`register_type` adds a type of the application's own, with kombu's signature
(``kombu.utils.json.register_type``); a type needs registering in every process that reads it.

Reading an envelope whose ``__type__`` nobody registered is an error (kombu raises too): the
worker dead-letters the message instead of calling the task with a dict it never sent.

orjson encodes bodies, and it stays the whole cost of a plain body: it writes datetimes itself
unless told to pass them on (``OPT_PASSTHROUGH_DATETIME``) and always writes a ``UUID`` as its
36-character text, with no option to pass it on. So a UUID is found after the fact: the output
of a body that held one necessarily contains a quoted lowercase 8-4-4-4-12 string, and only a
body whose output does (a UUID, or a string that looks like one, such as a chain's task ids) is
walked to wrap its UUIDs and encoded again. Reading is the same: a body whose bytes never say
``__type__`` holds no envelope, and only one that does is walked.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from decimal import Decimal

T = TypeVar("T")

TYPE_KEY = "__type__"
VALUE_KEY = "__value__"
_ENVELOPE_KEYS = frozenset((TYPE_KEY, VALUE_KEY))

#: What can only be in a body's bytes if it holds an envelope (no encoder escapes ASCII letters).
ENVELOPE_MARKER = b'"__type__"'
_ENVELOPE_MARKER_TEXT = ENVELOPE_MARKER.decode()

#: A UUID as orjson writes it (starting at its first dash: a literal first character makes the
#: regex engine skip ahead to it); its absence from the output proves the input held no UUID.
_UUID_TEXT = re.compile(rb'-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"')

#: Values orjson writes natively and that hold nothing to wrap: the walks stop at them at once.
_LEAVES: frozenset[type] = frozenset((str, int, float, bool, type(None)))


def _envelope(marker: str, value: Any) -> dict[str, Any]:
    return {TYPE_KEY: marker, VALUE_KEY: value}


def _date_from_text(text: str) -> dt.date:
    return dt.datetime.fromisoformat(text).date()  # kombu's own reading: "2024-01-02T00:00" too


def _decimal_from_text(text: str) -> Decimal:
    import decimal  # see _load_decimal

    return decimal.Decimal(text)


def _uuid_from_fields(fields: dict[str, Any]) -> uuid.UUID:
    return uuid.UUID(**fields)  # kombu's reading: {"hex": ...}, also {"int": ...} or {"bytes"...}


def _text_to_bytes(text: str) -> bytes:
    return text.encode("utf-8")


def _base64_to_bytes(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def _uuid_fields(value: uuid.UUID) -> dict[str, str]:
    return {"hex": value.hex}


#: Encoders in the order kombu tries them (``isinstance``): datetime before date, as it is one.
#: Decimal joins on the first value orjson cannot write (see :func:`_load_decimal`).
_encoders: dict[type, tuple[str | None, Callable[[Any], Any]]] = {
    dt.datetime: ("datetime", dt.datetime.isoformat),
    dt.date: ("date", dt.date.isoformat),
    dt.time: ("time", dt.time.isoformat),
    uuid.UUID: ("uuid", _uuid_fields),
}
_decimal_loaded = False


def _load_decimal() -> None:
    """Register Decimal's encoder. :mod:`decimal` costs ~1 ms to import and most processes never
    see one, so it is imported by the first value orjson cannot write, not by every process (a
    ``Decimal`` that exists has imported it already)."""
    global _decimal_loaded
    import decimal

    _encoders.setdefault(decimal.Decimal, ("decimal", str))
    _decimal_loaded = True


_decoders: dict[str, Callable[[Any], Any]] = {
    "datetime": dt.datetime.fromisoformat,
    "date": _date_from_text,
    "time": dt.time.fromisoformat,
    "decimal": _decimal_from_text,
    "uuid": _uuid_from_fields,
    "bytes": _text_to_bytes,
    "base64": _base64_to_bytes,
}


def _identity(value: Any) -> Any:
    return value


def register_type(
    type_: type[T],
    marker: str | None,
    encoder: Callable[[T], Any],
    decoder: Callable[[Any], T] = _identity,
) -> None:
    """Send instances of ``type_`` as ``encoder(value)`` and read them back with ``decoder``.

    kombu's ``register_type``, same arguments: with a ``marker`` the value travels in an
    envelope and is decoded by ``decoder`` wherever it is read; with ``marker=None`` it travels
    as the bare encoded value and comes back as that. Types orjson writes natively (``str``,
    ``int``, ``dict``, ``list`` and their subclasses, enums, dataclasses) never reach an encoder.
    """
    _encoders[type_] = (marker, encoder)
    if marker is not None:
        _decoders[marker] = decoder


def encode_special(obj: Any) -> Any:
    """orjson's ``default`` hook: what to write for ``obj``, which orjson cannot write itself.

    Raises ``TypeError`` naming the type when nothing knows it.
    """
    if not _decimal_loaded:
        _load_decimal()
    found = _encoders.get(type(obj))  # exact type first: one dict lookup in the common case
    if found is None:
        reducer = getattr(obj, "__json__", None)
        if reducer is not None:
            return reducer()
        if isinstance(obj, bytes):
            try:
                return _envelope("bytes", obj.decode("utf-8"))
            except UnicodeDecodeError:
                return _envelope("base64", base64.b64encode(obj).decode("ascii"))
        for kind, candidate in tuple(_encoders.items()):  # register_type may run meanwhile
            if isinstance(obj, kind):
                found = candidate
                break
    if found is not None:
        marker, encoder = found
        return encoder(obj) if marker is None else _envelope(marker, encoder(obj))
    # sets are celeriac's leniency (kombu's json refuses them); a tuple subclass (a namedtuple)
    # is a list, as in kombu
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"json cannot serialize an object of type {type(obj).__qualname__}")


#: The one byte every UUID text, and every envelope, holds. ``byte in data`` with an int is a
#: ``memchr`` (18 ns on a small body); ``data.find(b"-")`` costs 60 ns, ``b"-" in data`` 170 ns
#: (it tries the needle as an int first and clears the error), and a longer needle is compared
#: byte by byte (600 ns over 1.7 kB). So the hot path asks for one byte first.
DASH = ord("-")
UNDERSCORE = ord("_")


def may_hold_uuid(encoded: bytes) -> bool:
    """False when ``encoded`` (orjson's output) proves its input held no ``UUID``."""
    return DASH in encoded and _UUID_TEXT.search(encoded) is not None


def wrap_uuids(obj: Any) -> Any:
    """``obj`` with every ``UUID`` in it replaced by its envelope, for orjson to encode again.

    Walks what orjson would walk (dicts, lists, tuples, dataclasses, and what the default hook
    turns other objects into); dict keys are left alone (kombu refuses a UUID key, orjson writes
    its text). Exact types first and leaves without a call: this runs for every body that holds
    a string shaped like a UUID (a chain's task ids).
    """
    kind = type(obj)
    if kind is list or kind is tuple:
        return [item if type(item) in _LEAVES else wrap_uuids(item) for item in obj]
    if kind is dict:
        return {
            key: item if type(item) in _LEAVES else wrap_uuids(item) for key, item in obj.items()
        }
    if kind in _LEAVES:
        return obj
    if kind is uuid.UUID:
        return _envelope("uuid", _uuid_fields(obj))
    return _wrap_other(obj)


def _wrap_other(obj: Any) -> Any:
    """:func:`wrap_uuids` for the rarer kinds: subclasses, sets, dataclasses, special types."""
    if isinstance(obj, uuid.UUID):
        marker, encoder = _encoders.get(type(obj)) or _encoders[uuid.UUID]
        return encoder(obj) if marker is None else _envelope(marker, encoder(obj))
    if isinstance(obj, dict):
        return {key: wrap_uuids(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [wrap_uuids(value) for value in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):  # orjson writes its fields
        fields = dataclasses.fields(obj)
        return {field.name: wrap_uuids(getattr(obj, field.name)) for field in fields}
    try:
        encoded = encode_special(obj)  # what the default hook would give orjson: walk that
    except TypeError:
        return obj  # orjson writes it (an enum) or refuses it, as it would have
    return wrap_uuids(encoded)


def may_hold_envelope(data: bytes | bytearray | memoryview | str) -> bool:
    """False when the JSON text ``data`` cannot hold an envelope (it never says ``"__type__"``)."""
    if type(data) is not bytes:
        if isinstance(data, str):
            return _ENVELOPE_MARKER_TEXT in data
        data = bytes(data)
    return UNDERSCORE in data and data.find(ENVELOPE_MARKER, data.index(UNDERSCORE) - 1) >= 0


def unwrap_envelopes(value: Any) -> Any:
    """``value`` (decoded JSON) with every envelope replaced by the value it holds.

    Innermost first, as kombu's ``object_hook`` does. An unknown ``__type__`` raises
    ``ValueError`` naming it.
    """
    kind = type(value)
    if kind is list:
        return [unwrap_envelopes(item) for item in value]
    if kind is not dict:
        return value
    unwrapped = {key: unwrap_envelopes(item) for key, item in value.items()}
    if len(unwrapped) == 2 and unwrapped.keys() == _ENVELOPE_KEYS:
        marker = unwrapped[TYPE_KEY]
        decoder = _decoders.get(marker) if isinstance(marker, str) else None
        if decoder is None:
            raise ValueError(
                f"json envelope of unknown __type__ {marker!r}; known: {sorted(_decoders)} "
                "(a type the sender registered with register_type must be registered here too)"
            )
        return decoder(unwrapped[VALUE_KEY])
    return unwrapped


__all__ = [
    "DASH",
    "ENVELOPE_MARKER",
    "TYPE_KEY",
    "UNDERSCORE",
    "VALUE_KEY",
    "encode_special",
    "may_hold_envelope",
    "may_hold_uuid",
    "register_type",
    "unwrap_envelopes",
    "wrap_uuids",
]
