"""The compression registry: kombu's header values, zlib-or-gzip reading, typed failures."""

from __future__ import annotations

import base64
import gzip
import sys
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from celeriac.errors import DecodeError, ImproperlyConfigured
from celeriac.protocol.compression import BZ2, GZIP, LZMA, ZSTD, CompressionRegistry
from conftest import LoadsOnFirstMiss

REGISTRY = CompressionRegistry.with_defaults()

PAYLOAD = b'[[2, 3], {}, {"callbacks": null}]' * 50


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("zlib", GZIP),
        ("gzip", GZIP),
        ("bz2", BZ2),
        ("bzip2", BZ2),
        ("lzma", LZMA),
        ("xz", LZMA),
        ("zstd", ZSTD),
    ],
)
def test_every_compressor_round_trips_under_kombus_header(name: str, header: str) -> None:
    got_header, compressed = REGISTRY.compress(PAYLOAD, name)
    assert got_header == header
    assert len(compressed) < len(PAYLOAD)
    assert REGISTRY.decompress(compressed, got_header) == PAYLOAD
    assert REGISTRY.header_for(name) == header


@given(st.binary(max_size=2048), st.sampled_from(["zlib", "bz2", "lzma", "zstd"]))
def test_arbitrary_bytes_round_trip(data: bytes, name: str) -> None:
    header, compressed = REGISTRY.compress(data, name)
    assert REGISTRY.decompress(compressed, header) == data


def test_gzip_name_produces_a_zlib_stream_like_kombu() -> None:
    """kombu's "gzip" is zlib.compress under application/x-gzip; a Celery worker expects that."""
    _, compressed = REGISTRY.compress(PAYLOAD, "gzip")
    assert zlib.decompress(compressed) == PAYLOAD


def test_a_real_gzip_stream_is_read_too() -> None:
    assert REGISTRY.decompress(gzip.compress(PAYLOAD), GZIP) == PAYLOAD
    two_members = gzip.compress(b"ab") + gzip.compress(b"cd")
    assert REGISTRY.decompress(two_members, GZIP) == b"abcd"


def test_a_body_compressed_by_kombu_decodes() -> None:
    """The bytes a kombu producer sends with compression="gzip": a zlib stream."""
    kombu_body = base64.b64decode("eJyLjjbSUTCO1VGoro0FABRwA2Y=")
    assert REGISTRY.decompress(kombu_body, "application/x-gzip") == b"[[2, 3], {}]"


def test_decompress_accepts_a_name_as_header() -> None:
    _, compressed = REGISTRY.compress(PAYLOAD, "zstd")
    assert REGISTRY.decompress(compressed, "zstd") == PAYLOAD


def test_unknown_header_is_a_decode_error_naming_it() -> None:
    with pytest.raises(DecodeError, match="application/x-snappy"):
        REGISTRY.decompress(b"data", "application/x-snappy")


def test_unknown_name_when_sending_is_a_configuration_error() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"'snappy'.*zlib"):
        REGISTRY.compress(b"data", "snappy")
    with pytest.raises(ImproperlyConfigured, match="'snappy'"):
        REGISTRY.header_for("snappy")


@pytest.mark.parametrize("name", ["zlib", "bz2", "lzma", "zstd"])
def test_corrupt_data_is_a_decode_error_naming_the_header(name: str) -> None:
    header, compressed = REGISTRY.compress(PAYLOAD, name)
    for corrupt in (b"not compressed at all", compressed[: len(compressed) // 2]):
        with pytest.raises(DecodeError) as info:
            REGISTRY.decompress(corrupt, header)
        assert header in str(info.value)
        assert info.value.__cause__ is not None


def test_truncated_real_gzip_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="application/x-gzip"):
        REGISTRY.decompress(gzip.compress(PAYLOAD)[:20], GZIP)


def test_user_registered_compressor() -> None:
    registry = CompressionRegistry.with_defaults()

    def rot(data: bytes) -> bytes:
        return bytes((b + 1) % 256 for b in data)

    def unrot(data: bytes) -> bytes:
        if data.startswith(b"!"):
            raise ValueError("rot streams never start with '!'")
        return bytes((b - 1) % 256 for b in data)

    registry.register("rot", rot, unrot, "application/x-rot", aliases=("rot1",))
    header, compressed = registry.compress(b"abc", "rot1")
    assert (header, compressed) == ("application/x-rot", b"bcd")
    assert registry.decompress(compressed, header) == b"abc"
    with pytest.raises(DecodeError, match="rot streams never start"):
        registry.decompress(b"!x", header)
    assert "rot" in registry
    assert "rot" not in REGISTRY


def test_register_refuses_empty_names() -> None:
    with pytest.raises(ImproperlyConfigured):
        CompressionRegistry().register("", zlib.compress, zlib.decompress, "application/x")
    with pytest.raises(ImproperlyConfigured):
        CompressionRegistry().register("x", zlib.compress, zlib.decompress, "")


def test_missing_zstandard_names_the_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)  # what a missing package looks like
    registry = CompressionRegistry.with_defaults()
    hint = 'pip install "celeriac[zstd]"'
    with pytest.raises(ImproperlyConfigured) as sending:
        registry.compress(b"x", "zstd")
    assert hint in str(sending.value)
    with pytest.raises(DecodeError) as receiving:
        registry.decompress(b"x", ZSTD)
    assert hint in str(receiving.value)
    assert isinstance(receiving.value.__cause__, ImproperlyConfigured)
    assert registry.compress(b"x", "zlib")[0] == GZIP


def test_zstd_loaded_by_another_thread_between_two_lookups_is_found() -> None:
    pytest.importorskip("zstandard")
    registry = CompressionRegistry.with_defaults()
    table = LoadsOnFirstMiss(registry._by_name, "zstd", registry._load_zstd)
    registry._by_name = table
    assert registry.header_for("zstd") == ZSTD
    assert table.fired


def test_a_zstd_header_loaded_by_another_thread_between_two_lookups_is_read() -> None:
    zstandard = pytest.importorskip("zstandard")
    registry = CompressionRegistry.with_defaults()
    table = LoadsOnFirstMiss(registry._by_header, ZSTD, registry._load_zstd)
    registry._by_header = table
    data = zstandard.ZstdCompressor().compress(b"payload")
    assert registry.decompress(data, ZSTD) == b"payload"
    assert table.fired
