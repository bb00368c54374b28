"""Hypothesis generators of malformed task messages, as raw kombu JSON envelopes.

Each generator gives the bytes a broker would hand a worker. They cover broken or missing
headers, headers of wrong types, bodies that are not ``[args, kwargs, embed]``, wrong types
inside, huge or deeply nested payloads (bounded so that a test stays fast), invalid UTF-8,
unknown content types and encodings, bad base64, compression headers naming unknown codecs, and
compression bombs (against a registry whose limit :data:`FUZZ_LIMIT` keeps them cheap).
"""

from __future__ import annotations

import base64
import bz2
import gzip
import lzma
import zlib
from typing import Any

import orjson
from hypothesis import strategies as st

#: The decompressed-size limit of the fuzzing registry: bombs past it stay cheap to build.
FUZZ_LIMIT = 256 * 1024

_BOMB_PLAIN = bytes(FUZZ_LIMIT * 4)
#: One bomb per codec, each expanding to four times the fuzzing limit.
BOMBS: dict[str, bytes] = {
    "application/x-gzip": zlib.compress(_BOMB_PLAIN, 9),
    "gzip": gzip.compress(_BOMB_PLAIN, 9),
    "application/x-bz2": bz2.compress(_BOMB_PLAIN, 9),
    "application/x-lzma": lzma.compress(_BOMB_PLAIN),
}
try:
    import zstandard

    BOMBS["application/zstd"] = zstandard.ZstdCompressor().compress(_BOMB_PLAIN)
except ImportError:  # pragma: no cover - zstd is an optional bundle
    pass

CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/x-msgpack",
    "application/x-yaml",
    "application/x-python-serialize",  # pickle: never accepted by the fuzzed worker
    "text/plain",
    "application/x-unknown",
    "",
]
CONTENT_ENCODINGS = ["utf-8", "binary", "latin-1", "utf-16", "no-such-codec", ""]
COMPRESSION_HEADERS = [*BOMBS, "application/x-nope", "rar", ""]

#: JSON values of bounded size: scalars, strings with odd code points, small nestings.
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def deep_nesting(draw: st.DrawFn) -> bytes:
    """A JSON document nested past any sane depth (orjson refuses beyond 1024)."""
    depth = draw(st.integers(min_value=500, max_value=3000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    return (opener * depth + "1" + closer * depth).encode()


@st.composite
def huge_payload(draw: st.DrawFn) -> bytes:
    """A wide body: many arguments or one long string (a few hundred KiB at most)."""
    count = draw(st.integers(min_value=1_000, max_value=20_000))
    if draw(st.booleans()):
        return orjson.dumps([list(range(count)), {}, None])
    return orjson.dumps([["x" * (count * 10)], {}, None])


def _shaped(args: Any, kwargs: Any, embed: Any) -> bytes:
    return orjson.dumps([args, kwargs, embed], option=orjson.OPT_NON_STR_KEYS)


#: Body bytes: mostly wrong shapes, some right ones, some not JSON at all.
body_bytes = st.one_of(
    json_values.map(orjson.dumps),  # anything but the 3-item shape, mostly
    st.builds(_shaped, json_values, json_values, json_values),  # wrong types inside
    st.builds(_shaped, st.lists(json_scalars, max_size=3), st.just({}), st.just(None)),  # good
    st.builds(
        _shaped,
        st.just([]),
        st.dictionaries(st.integers(-(2**63), 2**63 - 1), json_scalars, min_size=1, max_size=3),
        st.just(None),
    ),
    st.binary(max_size=64),  # invalid UTF-8, garbage
    st.sampled_from([b"\xff\xfe[[],{},null]", b"[[],{},null", b"", b"\x00", b"[[],{},null]x"]),
    deep_nesting(),
    huge_payload(),
)

#: Header values of every JSON type, for headers that expect a str, a time, an int.
any_header_value = st.one_of(
    json_values,
    st.sampled_from(["", "not-a-time", "2026-13-45T99:99:99", "1e400", "NaN", "-1"]),
    st.sampled_from([1e300, -1e300, 2**63, -(2**63), 10**18, -1.5]),
)


@st.composite
def headers(draw: st.DrawFn) -> Any:
    """Task headers, each possibly missing, of a wrong type or absurd; sometimes not a dict."""
    if draw(st.integers(min_value=0, max_value=20)) == 0:
        return draw(json_values)  # not an object at all (or, rarely, an empty one)
    found: dict[str, Any] = {}
    for name, good in (
        ("lang", st.just("py")),
        ("task", st.sampled_from(["fuzz.noop", "no.such.task"])),
        ("id", st.uuids().map(str)),
        ("root_id", st.none()),
        ("parent_id", st.none()),
        ("group", st.none()),
        ("retries", st.integers(min_value=0, max_value=3)),
        ("eta", st.none()),
        ("expires", st.none()),
        ("timelimit", st.just([None, None])),
        ("argsrepr", st.just("()")),
        ("kwargsrepr", st.just("{}")),
        ("ignore_result", st.booleans()),
    ):
        choice = draw(st.integers(min_value=0, max_value=9))
        if choice == 0:
            continue  # missing
        found[name] = draw(any_header_value) if choice == 1 else draw(good)
    if draw(st.booleans()):
        found["compression"] = draw(st.sampled_from(COMPRESSION_HEADERS))
    return found


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    """A raw kombu JSON envelope (or something that fails to be one), as a broker delivers it."""
    shape = draw(st.integers(min_value=0, max_value=30))
    if shape == 0:
        return draw(st.binary(max_size=64))  # not JSON
    if shape == 1:
        return orjson.dumps(draw(json_values))  # JSON, not an envelope
    head = draw(headers())
    body = draw(body_bytes)
    compression = head.get("compression") if isinstance(head, dict) else None
    if compression in BOMBS and draw(st.booleans()):
        body = BOMBS[compression]
    elif compression and draw(st.booleans()):
        body = zlib.compress(body)  # right or wrong codec for the header
    envelope: dict[str, Any] = {"headers": head}
    body_kind = draw(st.integers(min_value=0, max_value=12))
    properties: Any = {"body_encoding": "base64", "delivery_tag": "t"}
    if body_kind == 0:
        envelope["body"] = draw(st.text(max_size=40))  # bad base64, mostly
    elif body_kind == 1:
        envelope["body"] = draw(json_values)  # not a string
    elif body_kind == 2:
        pass  # no body
    elif body_kind == 3:
        properties = {"body_encoding": draw(st.sampled_from(["utf-8", "base32", None]))}
        envelope["body"] = body.decode("utf-8", "replace")
    elif body_kind == 4:
        properties = draw(json_values)  # not an object, mostly
        envelope["body"] = base64.b64encode(body).decode()
    else:
        envelope["body"] = base64.b64encode(body).decode()
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        properties = (
            {**properties, "priority": draw(any_header_value)}
            if isinstance(properties, dict)
            else properties
        )
    envelope["properties"] = properties
    envelope["content-type"] = draw(st.sampled_from(CONTENT_TYPES) | json_scalars)
    envelope["content-encoding"] = draw(st.sampled_from(CONTENT_ENCODINGS) | json_scalars)
    return orjson.dumps(envelope)
