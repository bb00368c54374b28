"""The protocol v2 body codec: ``[args, kwargs, embed]`` in, the same out, or a reason why not."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from celeriac.errors import ContentDisallowed, DecodeError, ImproperlyConfigured
from celeriac.protocol.codec import DEFAULT_EMBED, Codecs, decode_body, encode_body
from celeriac.protocol.message import Message, new_id, task_message
from celeriac.protocol.serializers import JSON, PICKLE, YAML, EncodeError

CODECS = Codecs.with_defaults()

CELERY_JSON_BODY = (
    b'[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
)


def message_for(
    body: bytes,
    content_type: str = JSON,
    content_encoding: str = "utf-8",
    compression: str | None = None,
) -> Message:
    return task_message(
        task="tasks.add",
        task_id=new_id(),
        body=body,
        content_type=content_type,
        content_encoding=content_encoding,
        compression=compression,
    )


def message_of(args: Any, kwargs: Any, embed: Any, *, serializer: str = "json") -> Message:
    """A message whose body bypasses encode_body's checks, as a foreign producer might send."""
    content_type, encoding, data = CODECS.serializers.dumps([args, kwargs, embed], serializer)
    return message_for(data, content_type, encoding)


def round_trip(
    args: Any, kwargs: Any, embed: Any, serializer: str, compression: str | None = None
) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    encoded = encode_body(
        args, kwargs, embed, serializer=serializer, compression=compression, codecs=CODECS
    )
    message = message_for(
        encoded.body, encoded.content_type, encoded.content_encoding, encoded.compression
    )
    return decode_body(message, accept=[serializer], codecs=CODECS)


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("serializer", ["json", "msgpack", "yaml", "pickle"])
@pytest.mark.parametrize("compression", [None, "gzip", "bz2", "xz", "zstd"])
def test_round_trip_every_serializer_and_compressor(
    serializer: str, compression: str | None
) -> None:
    args, kwargs, embed = round_trip(
        (2, "three"), {"x": [1, 2]}, None, serializer=serializer, compression=compression
    )
    assert args == [2, "three"]
    assert kwargs == {"x": [1, 2]}
    assert embed == DEFAULT_EMBED


INT64 = st.integers(-(2**63), 2**63 - 1)


@given(
    st.lists(INT64 | st.text(), max_size=5),
    st.dictionaries(st.text(max_size=10), INT64 | st.text()),
)
def test_json_round_trip_of_arguments(args: list[Any], kwargs: dict[str, Any]) -> None:
    assert round_trip(args, kwargs, None, "json")[:2] == (args, kwargs)


def test_encode_layout_is_celerys() -> None:
    encoded = encode_body([2, 3], {}, None, serializer="json", compression=None, codecs=CODECS)
    assert encoded.body == CELERY_JSON_BODY.replace(b", ", b",").replace(b": ", b":")
    assert (encoded.content_type, encoded.content_encoding, encoded.compression) == (
        JSON,
        "utf-8",
        None,
    )


def test_partial_embed_is_completed_with_celerys_defaults() -> None:
    link = {"task": "tasks.log", "args": [], "kwargs": {}, "options": {}}
    _, _, embed = round_trip([], {}, {"callbacks": [link]}, "json")
    assert embed == {"callbacks": [link], "errbacks": None, "chain": None, "chord": None}


def test_compressed_body_keeps_the_serializers_content_encoding() -> None:
    """kombu's content_encoding describes the decompressed bytes; a Celery worker relies on it."""
    encoded = encode_body([1], {}, None, serializer="json", compression="gzip", codecs=CODECS)
    assert encoded.content_encoding == "utf-8"
    assert encoded.compression == "application/x-gzip"


def test_decodes_a_body_produced_the_way_celery_does() -> None:
    args, kwargs, embed = decode_body(
        message_for(CELERY_JSON_BODY), accept=("json",), codecs=CODECS
    )
    assert (args, kwargs) == ([2, 3], {})
    assert embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def test_decodes_celerys_pickled_tuples() -> None:
    """Celery pickles ``(args, kwargs, embed)`` with args a tuple; args come back as a list."""
    body = pickle.dumps(((2, 3), {"k": 1}, dict(DEFAULT_EMBED)), protocol=4)
    args, kwargs, _ = decode_body(
        message_for(body, PICKLE, "binary"), accept=["pickle"], codecs=CODECS
    )
    assert (args, kwargs) == ([2, 3], {"k": 1})


def test_decodes_celerys_yaml() -> None:
    body = yaml.safe_dump([[2, 3], {"k": "v"}, dict(DEFAULT_EMBED)]).encode()
    args, kwargs, _ = decode_body(message_for(body, YAML), accept=["yaml"], codecs=CODECS)
    assert (args, kwargs) == ([2, 3], {"k": "v"})


def test_null_embed_becomes_an_empty_dict() -> None:
    assert decode_body(message_of([1], {}, None), accept=["json"], codecs=CODECS)[2] == {}


# --- the accept list ----------------------------------------------------------------------------


def test_pickle_is_refused_by_the_default_accept_list() -> None:
    encoded = encode_body([1], {}, None, serializer="pickle", compression=None, codecs=CODECS)
    message = message_for(encoded.body, encoded.content_type, encoded.content_encoding)
    with pytest.raises(ContentDisallowed, match="x-python-serialize"):
        decode_body(message, accept=("json",), codecs=CODECS)
    assert decode_body(message, accept=("json", "pickle"), codecs=CODECS)[0] == [1]


def test_accept_is_checked_before_decompressing() -> None:
    """A refused sender cannot make the worker inflate anything: garbage is never looked at."""
    message = message_for(b"not zlib", PICKLE, "binary", compression="application/x-gzip")
    with pytest.raises(ContentDisallowed):
        decode_body(message, accept=["json"], codecs=CODECS)


# --- errors -------------------------------------------------------------------------------------


def test_encode_refuses_non_str_kwargs_keys() -> None:
    with pytest.raises(EncodeError, match="str"):
        encode_body([], {1: "x"}, None, serializer="json", compression=None, codecs=CODECS)  # type: ignore[dict-item]


@pytest.mark.parametrize("args", ["ab", b"ab", 3])
def test_encode_refuses_args_that_are_not_a_sequence(args: Any) -> None:
    with pytest.raises(EncodeError, match="args"):
        encode_body(args, {}, None, serializer="json", compression=None, codecs=CODECS)


def test_encode_refuses_kwargs_that_are_not_a_mapping() -> None:
    with pytest.raises(EncodeError, match="kwargs"):
        encode_body([], [("a", 1)], None, serializer="json", compression=None, codecs=CODECS)  # type: ignore[arg-type]


def test_encode_unknown_serializer_or_compression() -> None:
    with pytest.raises(ImproperlyConfigured, match="'nope'"):
        encode_body([], {}, None, serializer="nope", compression=None, codecs=CODECS)
    with pytest.raises(ImproperlyConfigured, match="'nope'"):
        encode_body([], {}, None, serializer="json", compression="nope", codecs=CODECS)


def test_encode_unserializable_argument_names_its_type() -> None:
    with pytest.raises(EncodeError, match="object"):
        encode_body([object()], {}, None, serializer="json", compression=None, codecs=CODECS)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"args": []}', "body is a dict, expected a 3-item list"),
        (b"[[], {}]", "body has 2 items, expected 3"),
        (b"[[], {}, {}, {}]", "body has 4 items, expected 3"),
        (b'["ab", {}, null]', "args (body item 0) is a str, expected a list"),
        (b"[[], [], null]", "kwargs (body item 1) is a list, expected a dict"),
        (b"[[], {}, []]", "embed (body item 2) is a list, expected a dict or null"),
        (b"[[], {}, ", "cannot decode application/json body"),
    ],
)
def test_malformed_bodies_say_what_is_wrong(body: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_body(message_for(body), accept=["json"], codecs=CODECS)
    assert reason in str(info.value)


def test_non_str_kwargs_keys_from_a_foreign_producer() -> None:
    with pytest.raises(DecodeError, match=r"non-str keys: \[1\]"):
        decode_body(
            message_of([], {1: "x"}, None, serializer="pickle"), accept=["pickle"], codecs=CODECS
        )


def test_corrupt_compressed_body() -> None:
    message = message_for(b"not zlib", compression="application/x-gzip")
    with pytest.raises(DecodeError, match="application/x-gzip") as info:
        decode_body(message, accept=["json"], codecs=CODECS)
    assert info.value.__cause__ is not None


def test_unknown_compression_header() -> None:
    message = message_for(CELERY_JSON_BODY, compression="application/x-brotli")
    with pytest.raises(DecodeError, match="application/x-brotli"):
        decode_body(message, accept=["json"], codecs=CODECS)


def test_unknown_content_type_listed_in_accept() -> None:
    message = message_for(b"...", "application/x-thrift", "binary")
    with pytest.raises(DecodeError, match="application/x-thrift") as info:
        decode_body(message, accept=["application/x-thrift"], codecs=CODECS)
    assert not isinstance(info.value, ContentDisallowed)
