"""In-process fuzzing: every malformed envelope is refused with a DecodeError, nothing else.

A worker dead-letters a message whose decoding raises :class:`DecodeError`; any other exception
is an "internal error" that requeues the message, so the same bad message comes back forever (a
stall). These properties feed generated envelopes (see :mod:`tests.fuzz.strategies`) through what
the worker does before it runs a task: :meth:`Message.from_wire`, the header pre-checks and
:func:`decode_body`, against a compression registry whose limit keeps bombs cheap.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from celeriac.errors import DecodeError
from celeriac.protocol.codec import Codecs, decode_body
from celeriac.protocol.compression import CompressionRegistry
from celeriac.protocol.message import Message
from celeriac.protocol.serializers import SerializerRegistry
from celeriac.transports.base import Delivery
from celeriac.worker.request import build_request

from .strategies import BOMBS, FUZZ_LIMIT, envelopes

ACCEPT = ["json", "msgpack", "yaml"]
CODECS = Codecs(
    SerializerRegistry.with_defaults(), CompressionRegistry.with_defaults(max_size=FUZZ_LIMIT)
)
FUZZ = settings(
    derandomize=True,
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def decode(wire: bytes) -> tuple[Message, tuple[list[Any], dict[str, Any], dict[str, Any]]]:
    """What the protocol layer does with a delivery: the envelope, then the body."""
    message = Message.from_wire(wire)
    return message, decode_body(message, accept=ACCEPT, codecs=CODECS)


@FUZZ
@given(envelopes())
def test_envelope_and_body_decoding_raise_only_decode_error(wire: bytes) -> None:
    with contextlib.suppress(DecodeError):  # anything else fails the test
        decode(wire)


@pytest.mark.parametrize("header", sorted(BOMBS))
def test_every_bomb_in_an_envelope_is_refused_naming_the_limit(header: str) -> None:
    import base64

    import orjson

    wire = orjson.dumps(
        {
            "headers": {"task": "t", "id": "1", "compression": header},
            "body": base64.b64encode(BOMBS[header]).decode(),
            "properties": {"body_encoding": "base64"},
            "content-type": "application/json",
            "content-encoding": "utf-8",
        }
    )
    with pytest.raises(DecodeError, match=f"more than the limit of {FUZZ_LIMIT} bytes"):
        decode(wire)


@FUZZ
@given(envelopes())
def test_the_workers_prechecks_raise_only_decode_error(wire: bytes) -> None:
    """Beyond decoding: the request the worker builds reads ``retries`` and ``priority`` as ints
    (``eta``/``expires`` out of range: the test below)."""
    with contextlib.suppress(DecodeError):
        message, (args, kwargs, embed) = decode(wire)
        build_request(message, Delivery("tag", "q", wire), args, kwargs, embed, "fuzz@host")


@pytest.mark.parametrize(
    ("headers", "properties"),
    [({"retries": "x"}, {}), ({"retries": {"a": 1}}, {}), ({}, {"priority": "high"})],
    ids=["retries-str", "retries-dict", "priority-str"],
)
def test_unreadable_retries_or_priority_is_a_decode_error(
    headers: dict[str, Any], properties: dict[str, Any]
) -> None:
    message = Message({"task": "t", "id": "1", **headers}, b"[[],{},null]", properties=properties)
    with pytest.raises(DecodeError, match="is not an integer"):
        decode_body(message, accept=ACCEPT, codecs=CODECS)


@pytest.mark.parametrize(("name", "value"), [("eta", 1e300), ("eta", 10**18), ("expires", -1e300)])
def test_a_numeric_time_out_of_range_is_a_decode_error(name: str, value: float) -> None:
    message = Message({"task": "t", "id": "1", name: value}, b"[[],{},null]")
    with pytest.raises(DecodeError):
        getattr(message, name)
