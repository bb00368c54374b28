"""The serializer registry: round-trips, the accept list, and typed errors that say why."""

from __future__ import annotations

import datetime as dt
import decimal
import pickle
import sys
import uuid
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from celeriac.errors import CeleriacError, ContentDisallowed, DecodeError, ImproperlyConfigured
from celeriac.protocol.serializers import (
    JSON,
    MSGPACK,
    PICKLE,
    YAML,
    EncodeError,
    Serializer,
    SerializerRegistry,
)
from conftest import LoadsOnFirstMiss

REGISTRY = SerializerRegistry.with_defaults()

SAMPLE: Any = [[1, 2.5, "três", None, True], {"k": {"nested": [1, 2]}, "e": ""}, {"x": None}]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


class NotSerializable:
    """A plain object none of the text formats know."""


# --- round trips --------------------------------------------------------------------------------


@given(json_values)
def test_json_round_trips_json_native_values(value: Any) -> None:
    content_type, encoding, data = REGISTRY.dumps(value, "json")
    assert (content_type, encoding) == (JSON, "utf-8")
    assert REGISTRY.loads(data, content_type, encoding, accept=["json"]) == value


@pytest.mark.parametrize(
    ("name", "content_type", "encoding"),
    [
        ("json", JSON, "utf-8"),
        ("msgpack", MSGPACK, "binary"),
        ("yaml", YAML, "utf-8"),
        ("pickle", PICKLE, "binary"),
    ],
)
def test_every_default_serializer_round_trips(name: str, content_type: str, encoding: str) -> None:
    got_type, got_encoding, data = REGISTRY.dumps(SAMPLE, name)
    assert (got_type, got_encoding) == (content_type, encoding)
    assert REGISTRY.loads(data, got_type, got_encoding, accept=[name]) == SAMPLE
    assert REGISTRY.name_for(content_type) == name


@pytest.mark.parametrize("name", ["json", "msgpack", "yaml"])
def test_tuples_come_back_as_lists(name: str) -> None:
    _, encoding, data = REGISTRY.dumps({"t": (1, (2, 3))}, name)
    content_type = REGISTRY.get(name).content_type
    assert REGISTRY.loads(data, content_type, encoding, [name]) == {"t": [1, [2, 3]]}


def test_pickle_keeps_python_types() -> None:
    value = {"t": (1, 2), "s": {3}, "d": decimal.Decimal("1.10"), "b": b"\x00"}
    content_type, encoding, data = REGISTRY.dumps(value, "pickle")
    assert REGISTRY.loads(data, content_type, encoding, ["pickle"]) == value


def test_json_writes_decimal_in_kombus_envelope_and_sets_as_lists() -> None:
    _, _, data = REGISTRY.dumps(
        {"price": decimal.Decimal("19.99"), "tags": {"a"}, "f": frozenset({1})}, "json"
    )
    assert orjson.loads(data) == {
        "price": {"__type__": "decimal", "__value__": "19.99"},
        "tags": ["a"],
        "f": [1],
    }


def test_json_turns_non_str_keys_into_strings() -> None:
    _, _, data = REGISTRY.dumps({1: "one"}, "json")
    assert orjson.loads(data) == {"1": "one"}


def test_msgpack_sends_as_text_what_json_sends_typed() -> None:
    """kombu's msgpack cannot pack these at all; ours packs their text, where json (kombu's
    envelopes) gives the types back."""
    value = {
        "when": dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC),
        "naive": dt.datetime(2024, 5, 1, 12, 30, 0, 1500),
        "day": dt.date(2024, 5, 1),
        "id": uuid.UUID(int=7),
        "price": decimal.Decimal("0.1"),
        "tags": {"x"},
    }
    decoded = {}
    for name in ("json", "msgpack"):
        content_type, encoding, data = REGISTRY.dumps(value, name)
        decoded[name] = REGISTRY.loads(data, content_type, encoding, [name])
    assert decoded["json"] == value | {"tags": ["x"]}
    as_text = {key: str(item) for key, item in value.items()}
    assert decoded["msgpack"] == as_text | {
        "when": "2024-05-01T12:30:00+00:00",
        "naive": "2024-05-01T12:30:00.001500",
        "tags": ["x"],
    }


def test_msgpack_keeps_bytes_as_bytes() -> None:
    content_type, encoding, data = REGISTRY.dumps([b"\xff\x00", "text"], "msgpack")
    assert REGISTRY.loads(data, content_type, encoding, ["msgpack"]) == [b"\xff\x00", "text"]


# --- the accept list ----------------------------------------------------------------------------


def test_pickle_is_refused_by_the_default_accept_list() -> None:
    content_type, encoding, data = REGISTRY.dumps({"x": 1}, "pickle")
    with pytest.raises(ContentDisallowed) as info:
        REGISTRY.loads(data, content_type, encoding, accept=("json",))
    message = str(info.value)
    assert PICKLE in message
    assert "json" in message
    assert isinstance(info.value, DecodeError)


def test_pickle_is_refused_before_its_bytes_are_looked_at() -> None:
    """A body that would run code when unpickled is never unpickled: the content type decides."""

    class Boom:
        def __reduce__(self) -> tuple[Any, ...]:
            return (sys.exit, ("unpickled!",))

    data = pickle.dumps(Boom())
    with pytest.raises(ContentDisallowed):
        REGISTRY.loads(data, PICKLE, "binary", accept=("json",))


@pytest.mark.parametrize("accept", [["pickle"], [PICKLE], ["json", "pickle"]])
def test_pickle_is_read_when_listed(accept: list[str]) -> None:
    content_type, encoding, data = REGISTRY.dumps((1, "a"), "pickle")
    assert REGISTRY.loads(data, content_type, encoding, accept=accept) == (1, "a")


def test_accept_list_takes_names_and_content_types() -> None:
    assert REGISTRY.resolve_accept(["json", "application/x-yaml"]) == {JSON, YAML}
    assert REGISTRY.resolve_accept(["Application/JSON; charset=utf-8"]) == {JSON}
    _, _, data = REGISTRY.dumps([1], "json")
    assert REGISTRY.loads(data, JSON, "utf-8", accept=[JSON]) == [1]


def test_content_type_parameters_and_case_do_not_matter() -> None:
    _, _, data = REGISTRY.dumps([1], "json")
    assert REGISTRY.loads(data, "application/JSON; charset=utf-8", "utf-8", ["json"]) == [1]


def test_unknown_accept_names_are_a_configuration_error_naming_them() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"'jsn'.*'pikle'|'pikle'.*'jsn'"):
        REGISTRY.resolve_accept(["jsn", "json", "pikle"])


def test_an_empty_accept_list_refuses_everything() -> None:
    _, _, data = REGISTRY.dumps([1], "json")
    with pytest.raises(ContentDisallowed):
        REGISTRY.loads(data, JSON, "utf-8", accept=[])


# --- errors -------------------------------------------------------------------------------------


def test_unknown_serializer_name_when_sending() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"unknown serializer 'jsonn'.*json"):
        REGISTRY.dumps([1], "jsonn")


@pytest.mark.parametrize("name", ["json", "msgpack", "yaml"])
def test_unserializable_object_raises_encode_error_naming_the_type(name: str) -> None:
    with pytest.raises(EncodeError, match="NotSerializable") as info:
        REGISTRY.dumps({"x": [NotSerializable()]}, name)
    assert isinstance(info.value, CeleriacError)
    assert isinstance(info.value, TypeError)


def test_json_integer_out_of_range_is_an_encode_error() -> None:
    with pytest.raises(EncodeError, match="64-bit"):
        REGISTRY.dumps([2**80], "json")


def test_pickle_of_a_local_function_is_an_encode_error() -> None:
    def local() -> None: ...

    with pytest.raises(EncodeError, match="function") as info:
        REGISTRY.dumps(local, "pickle")
    assert info.value.__cause__ is not None


def test_unknown_content_type_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="application/x-nope") as info:
        REGISTRY.loads(b"{}", "application/x-nope", "utf-8", accept=["application/x-nope"])
    assert not isinstance(info.value, ContentDisallowed)
    with pytest.raises(DecodeError, match="application/x-nope"):
        REGISTRY.name_for("application/x-nope")


@pytest.mark.parametrize(
    ("name", "corrupt"),
    [
        ("json", b"{not json"),
        ("json", b"\xff\xfe"),
        ("msgpack", b"\xc1"),
        ("msgpack", b"\x93\x01"),
        ("yaml", b"key: [unclosed"),
        ("pickle", b"\x80\x04garbage"),
    ],
)
def test_corrupt_bodies_raise_decode_error_chained_to_the_cause(name: str, corrupt: bytes) -> None:
    serializer = REGISTRY.get(name)
    with pytest.raises(DecodeError) as info:
        REGISTRY.loads(corrupt, serializer.content_type, serializer.content_encoding, [name])
    assert serializer.content_type in str(info.value)
    assert info.value.__cause__ is not None
    assert type(info.value.__cause__).__name__ in str(info.value)


def test_yaml_never_builds_python_objects() -> None:
    evil = b"!!python/object/apply:os.system ['echo pwned']"
    with pytest.raises(DecodeError, match="application/x-yaml"):
        REGISTRY.loads(evil, YAML, "utf-8", ["yaml"])


def test_text_bodies_in_another_charset_are_transcoded() -> None:
    data = '["café"]'.encode("latin-1")
    assert REGISTRY.loads(data, JSON, "latin-1", ["json"]) == ["café"]
    with pytest.raises(DecodeError, match="no-such-charset"):
        REGISTRY.loads(data, JSON, "no-such-charset", ["json"])


# --- user serializers and missing bundles -------------------------------------------------------


def _upper_dumps(obj: Any) -> bytes:
    if not isinstance(obj, str):
        raise TypeError(f"only str, not {type(obj).__name__}")
    return obj.upper().encode()


def test_user_registered_serializer_with_aliases() -> None:
    registry = SerializerRegistry.with_defaults()
    shout = Serializer("shout", "text/x-shout", "utf-8", _upper_dumps, bytes.decode)
    registry.register("shout", shout, aliases=("loud",))
    assert registry.dumps("hi", "loud") == ("text/x-shout", "utf-8", b"HI")
    assert registry.loads(b"HI", "text/x-shout", "utf-8", accept=["shout"]) == "HI"
    assert registry.name_for("text/x-shout") == "shout"
    assert registry.resolve_accept(["loud"]) == {"text/x-shout"}
    with pytest.raises(EncodeError, match="int"):
        registry.dumps(3, "shout")
    assert "shout" not in REGISTRY


def test_registering_invalidates_the_accept_cache() -> None:
    registry = SerializerRegistry()
    with pytest.raises(ImproperlyConfigured):
        registry.resolve_accept(["shout"])
    registry.register(
        "shout", Serializer("shout", "text/x-shout", "utf-8", _upper_dumps, bytes.decode)
    )
    assert registry.resolve_accept(["shout"]) == {"text/x-shout"}


@pytest.mark.parametrize(
    ("name", "content_type", "encoding"),
    [("", "a/b", "utf-8"), ("x", "nope", "utf-8"), ("x", "a/b", "latin-1")],
)
def test_serializer_declarations_are_validated(name: str, content_type: str, encoding: str) -> None:
    with pytest.raises(ImproperlyConfigured):
        Serializer(name, content_type, encoding, _upper_dumps, bytes.decode)


@pytest.mark.parametrize(("module", "content_type"), [("msgpack", MSGPACK), ("yaml", YAML)])
def test_missing_optional_module_names_the_bundle(
    monkeypatch: pytest.MonkeyPatch, module: str, content_type: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what a missing package looks like to import
    registry = SerializerRegistry.with_defaults()
    hint = f'pip install "celeriac[{module}]"'
    assert module not in registry
    with pytest.raises(ImproperlyConfigured) as sending:
        registry.dumps([1], module)
    assert hint in str(sending.value)
    with pytest.raises(ImproperlyConfigured) as accepting:
        registry.resolve_accept(["json", module])
    assert hint in str(accepting.value)
    with pytest.raises(DecodeError) as receiving:
        registry.loads(b"\x90", content_type, "binary", accept=[content_type])
    assert hint in str(receiving.value)
    assert isinstance(receiving.value.__cause__, ImproperlyConfigured)
    assert registry.dumps([1], "json")[2] == b"[1]"


def test_a_built_in_loaded_by_another_thread_between_two_lookups_is_found() -> None:
    registry = SerializerRegistry.with_defaults()
    table = LoadsOnFirstMiss(registry._by_name, "msgpack", lambda: registry._load("msgpack"))
    registry._by_name = table
    assert registry.get("msgpack").name == "msgpack"
    assert table.fired


def test_a_content_type_loaded_by_another_thread_between_two_lookups_is_found() -> None:
    registry = SerializerRegistry.with_defaults()
    registry._load("yaml")  # msgpack is the last one pending: its load empties the table
    msgpack_type = "application/x-msgpack"
    table = LoadsOnFirstMiss(registry._by_type, msgpack_type, lambda: registry._load("msgpack"))
    registry._by_type = table
    assert registry.name_for(msgpack_type) == "msgpack"
    assert table.fired
