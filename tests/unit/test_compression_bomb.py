"""The decompressed-size limit: a compression bomb is refused while it is being inflated.

Each bomb below expands to 10 GiB; it is built cheaply (a compressed block of zeros repeated,
as concatenated streams or, for zlib, as a self-contained deflate segment after a full flush) and
must be refused in well under a second with the process' peak memory growing by less than about
100 MiB: decompress-then-measure would need 10 GiB.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import time
import zlib
from collections.abc import Callable

import pytest

from celeriac.errors import DecodeError, ImproperlyConfigured
from celeriac.protocol.codec import Codecs, decode_body, encode_body
from celeriac.protocol.compression import (
    BZ2,
    GZIP,
    LZMA,
    MAX_DECOMPRESSED_SIZE,
    ZSTD,
    CompressionRegistry,
)
from celeriac.protocol.message import task_message
from celeriac.protocol.serializers import SerializerRegistry

BOMB_SIZE = 10 * 1024**3
BLOCK = 16 * 1024 * 1024  # zeros compressed once, repeated BOMB_SIZE / BLOCK times
MiB = 1024 * 1024


def _repeat(one_stream: bytes) -> bytes:
    return one_stream * (BOMB_SIZE // BLOCK)


def _zlib_bomb() -> bytes:
    """One zlib stream of 10 GiB of zeros: after a full flush the compressor's state is the
    same every time, so the deflate segment for one MiB of zeros can be repeated."""
    engine = zlib.compressobj(9)
    zeros = bytes(MiB)
    head = engine.compress(zeros) + engine.flush(zlib.Z_FULL_FLUSH)
    segment = engine.compress(zeros) + engine.flush(zlib.Z_FULL_FLUSH)
    again = engine.compress(zeros) + engine.flush(zlib.Z_FULL_FLUSH)
    assert segment == again  # the segment is self-contained
    return head + segment * (BOMB_SIZE // MiB - 1)  # the trailer is never reached


def _zstd_bomb() -> bytes:
    zstandard = pytest.importorskip("zstandard")
    return _repeat(zstandard.ZstdCompressor().compress(bytes(BLOCK)))


BOMBS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "zlib": (GZIP, _zlib_bomb),
    "gzip": (GZIP, lambda: _repeat(gzip.compress(bytes(BLOCK), 9))),
    "bz2": (BZ2, lambda: _repeat(bz2.compress(bytes(BLOCK), 9))),
    "lzma": (LZMA, lambda: _repeat(lzma.compress(bytes(BLOCK)))),
    "zstd": (ZSTD, _zstd_bomb),
}


def _status(field: str) -> int:
    """A ``VmRSS``/``VmHWM`` figure of this process, in bytes (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def _reset_peak() -> int:
    """Reset the peak RSS to the current RSS and return it (Linux' ``clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        pytest.skip("cannot reset the peak RSS (/proc/self/clear_refs)")
    return _status("VmRSS")


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_a_10_gib_bomb_is_refused_quickly_with_bounded_memory(kind: str) -> None:
    header, build = BOMBS[kind]
    registry = CompressionRegistry.with_defaults()
    registry.decompress(registry.compress(b"warm", "zlib")[1], GZIP)  # imports out of the way
    bomb = build()
    start = _reset_peak()
    started = time.monotonic()
    with pytest.raises(DecodeError) as refused:
        registry.decompress(bomb, header)
    elapsed = time.monotonic() - started
    growth = _status("VmHWM") - start
    reason = refused.value.reason
    codec = "zlib" if kind in ("zlib", "gzip") else kind
    assert codec in reason and str(MAX_DECOMPRESSED_SIZE) in reason, reason
    assert "compression bomb" in reason
    assert elapsed < 5.0, f"{kind}: refused after {elapsed:.2f} s"
    assert growth < 100 * MiB, f"{kind}: peak RSS grew by {growth / MiB:.0f} MiB"
    print(f"{kind}: {len(bomb)} bytes refused in {elapsed:.2f} s, peak RSS +{growth / MiB:.0f} MiB")


@pytest.mark.parametrize("name", ["zlib", "gzip", "bz2", "lzma", "zstd"])
def test_the_limit_is_exact_and_settable(name: str) -> None:
    if name == "zstd":
        pytest.importorskip("zstandard")
    registry = CompressionRegistry.with_defaults()
    registry.max_size = 1000
    if name == "gzip":
        header, data = GZIP, gzip.compress(bytes(1000))
    else:
        header, data = registry.compress(bytes(1000), name)
    assert registry.decompress(data, header) == bytes(1000)
    registry.max_size = 999
    with pytest.raises(DecodeError, match="more than the limit of 999 bytes"):
        registry.decompress(data, header)


def test_concatenated_streams_count_towards_one_limit() -> None:
    registry = CompressionRegistry(max_size=1500)
    registry.register("bz2", bz2.compress, bz2.decompress, BZ2)  # unbounded user codec
    one = gzip.compress(bytes(1000))
    bounded = CompressionRegistry.with_defaults()
    bounded.max_size = 1500
    with pytest.raises(DecodeError, match="limit of 1500"):
        bounded.decompress(one * 2, GZIP)
    assert bounded.decompress(one, GZIP) == bytes(1000)
    # a user's codec cannot be bounded while it runs, but its result is measured
    with pytest.raises(DecodeError, match="limit of 1500"):
        registry.decompress(bz2.compress(bytes(2000)), BZ2)


@pytest.mark.parametrize("kind", ["zlib", "gzip", "bz2", "lzma", "zstd"])
def test_truncated_and_garbage_streams_are_decode_errors(kind: str) -> None:
    if kind == "zstd":
        pytest.importorskip("zstandard")
    registry = CompressionRegistry.with_defaults()
    if kind == "gzip":
        header, data = GZIP, gzip.compress(b"x" * 5000)
    else:
        header, data = registry.compress(bytes(range(256)) * 20, kind)
    for bad in (data[: len(data) // 2], data[:-1] if kind != "gzip" else data[:-4], b"\x00junk"):
        with pytest.raises(DecodeError, match="cannot decompress"):
            registry.decompress(bad, header)


def test_decode_body_refuses_a_bomb_in_a_message() -> None:
    small = CompressionRegistry.with_defaults(max_size=4096)
    codecs = Codecs(SerializerRegistry.with_defaults(), small)
    codecs_big = Codecs.with_defaults()
    encoded = encode_body(
        ["x" * 10_000], {}, None, serializer="json", compression="zlib", codecs=codecs_big
    )
    message = task_message(
        task="t",
        task_id="1",
        body=encoded.body,
        content_type=encoded.content_type,
        content_encoding=encoded.content_encoding,
        compression=encoded.compression,
    )
    assert decode_body(message, accept=["json"], codecs=codecs_big)[0] == ["x" * 10_000]
    with pytest.raises(DecodeError, match="limit of 4096 bytes with zlib"):
        decode_body(message, accept=["json"], codecs=codecs)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "64M"])
def test_a_bad_limit_is_refused(bad: object) -> None:
    with pytest.raises(ImproperlyConfigured, match="decompressed-size limit"):
        CompressionRegistry(max_size=bad)  # type: ignore[arg-type]
