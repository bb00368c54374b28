"""JSON carries datetime, date, time, Decimal, UUID and bytes as kombu 5.7 does, both ways.

Each claim is checked twice: against byte strings captured from kombu 5.7's ``dumps`` (committed
here, so the test runs anywhere), and, when the reference install of Celery 5.7 is present, live
against its kombu in a subprocess: it writes, we read; we write, it reads.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest

from celeriac.errors import DecodeError
from celeriac.protocol import jsontypes
from celeriac.protocol.codec import Codecs, decode_body, encode_body
from celeriac.protocol.message import task_message
from celeriac.protocol.serializers import JSON, EncodeError, SerializerRegistry

REGISTRY = SerializerRegistry.with_defaults()
CELERY_PYTHON = Path(sys.executable)  # Celery 5.7 (kombu 5.7) is a test dependency

EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}

#: One value of every type kombu wraps, nested the ways a task's arguments nest.
VALUE: dict[str, Any] = {
    "when": dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    "naive": dt.datetime(2024, 5, 1, 12, 30),
    "day": dt.date(2024, 2, 29),
    "at": dt.time(23, 59, 58, 7),
    "price": decimal.Decimal("19.990"),
    "id": uuid.UUID("6f1c1d2e-8a7b-4c3d-9e0f-112233445566"),
    "text": "café".encode(),
    "raw": b"\x00\xff\xfe",
    "nested": [(1, decimal.Decimal("-0.5")), {"deep": [uuid.UUID(int=1)]}],
}
#: What reading VALUE back gives: tuples are lists in JSON, everything else keeps its type.
VALUE_READ = VALUE | {"nested": [[1, decimal.Decimal("-0.5")], {"deep": [uuid.UUID(int=1)]}]}

#: kombu 5.7.0's ``dumps([[VALUE], {"at": date(2000, 1, 1)}, EMBED])``, captured with the
#: reference install (``kombu.utils.json.dumps``; its separators, its ASCII escapes).
KOMBU_BODY = (
    b'[[{"when": {"__type__": "datetime", "__value__": "2024-05-01T12:30:15.123456+02:00"}, '
    b'"naive": {"__type__": "datetime", "__value__": "2024-05-01T12:30:00"}, '
    b'"day": {"__type__": "date", "__value__": "2024-02-29"}, '
    b'"at": {"__type__": "time", "__value__": "23:59:58.000007"}, '
    b'"price": {"__type__": "decimal", "__value__": "19.990"}, '
    b'"id": {"__type__": "uuid", "__value__": {"hex": "6f1c1d2e8a7b4c3d9e0f112233445566"}}, '
    b'"text": {"__type__": "bytes", "__value__": "caf\\u00e9"}, '
    b'"raw": {"__type__": "base64", "__value__": "AP/+"}, '
    b'"nested": [[1, {"__type__": "decimal", "__value__": "-0.5"}], '
    b'{"deep": [{"__type__": "uuid", '
    b'"__value__": {"hex": "00000000000000000000000000000001"}}]}]}], '
    b'{"at": {"__type__": "date", "__value__": "2000-01-01"}}, '
    b'{"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
)
ARGS: list[Any] = [VALUE]
KWARGS: dict[str, Any] = {"at": dt.date(2000, 1, 1)}


def dumps(value: Any) -> bytes:
    return REGISTRY.dumps(value, "json")[2]


def loads(data: bytes) -> Any:
    return REGISTRY.loads(data, JSON, "utf-8", ["json"])


def run_kombu(script: str, stdin: bytes) -> bytes:
    """Run ``script`` under the reference Celery 5.7 install (kombu 5.7); its stdout."""
    done = subprocess.run(
        [str(CELERY_PYTHON), "-c", script], input=stdin, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


# --- the wire, against kombu's captured bytes --------------------------------------------------
def test_kombus_bytes_decode_to_the_same_python_values() -> None:
    assert loads(KOMBU_BODY) == [[VALUE_READ], KWARGS, EMBED]


def test_our_bytes_are_kombus_json_value_for_value() -> None:
    """Not byte for byte (orjson writes no spaces and raw UTF-8), but the same JSON document:
    the same envelopes, in the same places, with the same text in them."""
    ours = dumps([ARGS, KWARGS, EMBED])
    assert json.loads(ours) == json.loads(KOMBU_BODY)


def test_a_protocol_v2_body_round_trips_every_type() -> None:
    codecs = Codecs.with_defaults()
    encoded = encode_body(ARGS, KWARGS, None, serializer="json", compression=None, codecs=codecs)
    message = task_message(
        task="t.types",
        task_id="id-1",
        body=encoded.body,
        content_type=encoded.content_type,
        content_encoding=encoded.content_encoding,
    )
    args, kwargs, embed = decode_body(message, accept=["json"], codecs=codecs)
    assert (args, kwargs, embed) == ([VALUE_READ], KWARGS, EMBED)
    assert type(args[0]["when"]) is dt.datetime and type(args[0]["day"]) is dt.date


# --- the wire, live against kombu 5.7 ------------------------------------------------------------
KOMBU_WRITES = """
import datetime as dt, decimal, sys, uuid
from kombu.utils.json import dumps
value = {
    "when": dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    "naive": dt.datetime(2024, 5, 1, 12, 30),
    "day": dt.date(2024, 2, 29),
    "at": dt.time(23, 59, 58, 7),
    "price": decimal.Decimal("19.990"),
    "id": uuid.UUID("6f1c1d2e-8a7b-4c3d-9e0f-112233445566"),
    "text": "café".encode(),
    "raw": b"\\x00\\xff\\xfe",
    "nested": [(1, decimal.Decimal("-0.5")), {"deep": [uuid.UUID(int=1)]}],
}
embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
sys.stdout.write(dumps([[value], {"at": dt.date(2000, 1, 1)}, embed]))
"""

KOMBU_READS = """
import sys
from kombu.utils.json import loads
value = loads(sys.stdin.buffer.read())
def describe(v):
    if isinstance(v, dict):
        return {k: describe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [describe(x) for x in v]
    return [type(v).__name__, repr(v)]
import json
sys.stdout.write(json.dumps(describe(value)))
"""


def describe(value: Any) -> Any:
    """Types and reprs, as KOMBU_READS reports what kombu read."""
    if isinstance(value, dict):
        return {key: describe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [describe(item) for item in value]
    return [type(value).__name__, repr(value)]


def test_kombu_writes_celeriac_reads() -> None:
    written = run_kombu(KOMBU_WRITES, b"")
    assert written == KOMBU_BODY  # the captured bytes above are still kombu's
    assert loads(written) == [[VALUE_READ], KWARGS, EMBED]


def test_celeriac_writes_kombu_reads() -> None:
    read = json.loads(run_kombu(KOMBU_READS, dumps([ARGS, KWARGS, EMBED])))
    assert read == describe([[VALUE_READ], KWARGS, EMBED])


# --- each type, one at a time -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "envelope"),
    [
        (
            dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
            ["datetime", "2024-01-02T03:04:05+00:00"],
        ),
        (dt.date(2024, 1, 2), ["date", "2024-01-02"]),
        (dt.time(3, 4), ["time", "03:04:00"]),
        (decimal.Decimal("1E+3"), ["decimal", "1E+3"]),
        (uuid.UUID(int=255), ["uuid", {"hex": "000000000000000000000000000000ff"}]),
        (b"plain", ["bytes", "plain"]),
        (b"\x80", ["base64", "gA=="]),
    ],
    ids=["datetime", "date", "time", "decimal", "uuid", "utf8-bytes", "binary-bytes"],
)
def test_each_type_has_kombus_envelope_and_comes_back(value: Any, envelope: list[Any]) -> None:
    data = dumps({"v": value})
    assert orjson.loads(data) == {"v": {"__type__": envelope[0], "__value__": envelope[1]}}
    back = loads(data)["v"]
    assert back == value and type(back) is type(value)


def test_a_string_shaped_like_a_uuid_stays_a_string() -> None:
    text = str(uuid.UUID(int=3))
    assert orjson.loads(dumps([text, uuid.UUID(int=3)])) == [
        text,
        {"__type__": "uuid", "__value__": {"hex": uuid.UUID(int=3).hex}},
    ]
    assert loads(dumps([text, uuid.UUID(int=3)])) == [text, uuid.UUID(int=3)]
    assert type(loads(dumps([text]))[0]) is str


class Point(NamedTuple):
    x: int
    y: uuid.UUID


@dataclasses.dataclass
class Order:
    id: uuid.UUID
    placed: dt.datetime


class Jsonable:
    def __json__(self) -> Any:
        return {"id": uuid.UUID(int=9), "at": dt.date(2020, 1, 1)}


@pytest.mark.parametrize(
    ("value", "read"),
    [
        (Point(1, uuid.UUID(int=5)), [1, uuid.UUID(int=5)]),
        ({uuid.UUID(int=6)}, [uuid.UUID(int=6)]),
        (
            Order(uuid.UUID(int=7), dt.datetime(2020, 1, 1)),
            {"id": uuid.UUID(int=7), "placed": dt.datetime(2020, 1, 1)},
        ),
        (Jsonable(), {"id": uuid.UUID(int=9), "at": dt.date(2020, 1, 1)}),
        ((uuid.UUID(int=8),), [uuid.UUID(int=8)]),
    ],
    ids=["namedtuple", "set", "dataclass", "__json__", "tuple"],
)
def test_uuids_inside_every_container_orjson_writes_are_wrapped(value: Any, read: Any) -> None:
    assert loads(dumps({"v": value})) == {"v": read}


def test_an_object_with_other_keys_is_no_envelope() -> None:
    value = {"__type__": "decimal", "__value__": "1", "more": 1}
    assert loads(dumps(value)) == value


def test_an_unknown_envelope_type_is_a_decode_error_naming_it() -> None:
    with pytest.raises(DecodeError, match="'mystery'"):
        loads(b'[{"__type__": "mystery", "__value__": 1}]')


def test_text_and_memoryview_bodies_are_read_too() -> None:
    data = dumps({"at": dt.date(2024, 1, 2)})
    serializer = REGISTRY.get("json")
    assert serializer.loads(data.decode()) == {"at": dt.date(2024, 1, 2)}  # type: ignore[arg-type]
    assert serializer.loads(memoryview(data)) == {"at": dt.date(2024, 1, 2)}  # type: ignore[arg-type]


def test_non_str_keys_are_still_written_as_text() -> None:
    assert loads(dumps({1: "a", uuid.UUID(int=1): "b"})) == {"1": "a", str(uuid.UUID(int=1)): "b"}


def test_what_no_encoder_knows_is_an_encode_error_naming_the_type() -> None:
    with pytest.raises(EncodeError, match="json cannot serialize an object of type object"):
        dumps({"v": object()})


class Money:
    def __init__(self, cents: int) -> None:
        self.cents = cents

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and other.cents == self.cents

    __hash__ = None  # type: ignore[assignment]


def test_register_type_adds_an_envelope_as_kombus_does() -> None:
    decode: Callable[[Any], Money] = lambda cents: Money(int(cents))  # noqa: E731
    jsontypes.register_type(Money, "test-money", lambda m: m.cents, decode)
    data = dumps([Money(250)])
    assert orjson.loads(data) == [{"__type__": "test-money", "__value__": 250}]
    assert loads(data) == [Money(250)]
