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
