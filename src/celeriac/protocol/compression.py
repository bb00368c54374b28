"""Body compression, named in the ``compression`` header by kombu's values for Celery interop.

==============  =======================  ==========================================
names           header value             codec
==============  =======================  ==========================================
zlib, gzip      ``application/x-gzip``   :mod:`zlib` (see below)
bz2             ``application/x-bz2``    :mod:`bz2`
lzma, xz        ``application/x-lzma``   :mod:`lzma` (xz container)
zstd            ``application/zstd``     the ``zstandard`` package (optional bundle)
==============  =======================  ==========================================

**zlib and gzip.** kombu registers ``zlib.compress`` under the header ``application/x-gzip`` and
the aliases ``zlib`` and ``gzip``, so a Celery producer that asks for "gzip" actually sends a *zlib*
stream labelled gzip. We compress the same way, so a Celery worker can read what we send. To read,
we accept both: a body starting with gzip's magic bytes ``1f 8b`` is a real gzip stream (from a
non-kombu producer, or ``gzip -c``), anything else is zlib. The two never collide: a zlib stream's
first byte has 8 (deflate) in its low nibble, and ``0x1f`` does not.

The header carries the compressor's *content type*; on reading we also accept a name (``zstd``),
which costs nothing and forgives hand-written messages. Failures raise
:class:`~celeriac.errors.DecodeError` naming the header, chained to the codec's own error.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from celeriac.errors import DecodeError, ImproperlyConfigured
from celeriac.protocol.serializers import Unavailable

GZIP = "application/x-gzip"
BZ2 = "application/x-bz2"
LZMA = "application/x-lzma"
ZSTD = "application/zstd"

_GZIP_MAGIC = b"\x1f\x8b"

Codec = Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class Compressor:
    """One compression method: its name, the header value it travels under, and its two codecs."""

    name: str
    content_type: str
    compress: Codec
    decompress: Codec


class CompressionRegistry:
    """Compressors by name, alias and header value.

    An unknown *name* when sending is a configuration mistake (:class:`ImproperlyConfigured`); an
    unknown *header* when receiving is a bad message (:class:`DecodeError`), so the worker
    dead-letters it and carries on.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, Compressor] = {}
        self._by_header: dict[str, Compressor] = {}
        self._unavailable: dict[str, Unavailable] = {}

    @classmethod
    def with_defaults(cls) -> CompressionRegistry:
        """zlib/gzip, bz2 and lzma/xz always; zstd when the ``zstandard`` package imports."""
        registry = cls()
        registry.register("zlib", _zlib_compress, _zlib_or_gzip_decompress, GZIP, ("gzip",))
        registry.register("bz2", bz2.compress, bz2.decompress, BZ2, ("bzip2",))
        registry.register("lzma", lzma.compress, lzma.decompress, LZMA, ("xz",))
        try:
            compress, decompress = _zstd_codecs()
        except ImportError:
            missing = Unavailable("zstd", ZSTD, 'pip install "celeriac[zstd]"', kind="compression")
            for key in ("zstd", "zstandard", ZSTD):
                registry._unavailable[key] = missing
        else:
            registry.register("zstd", compress, decompress, ZSTD, ("zstandard",))
        return registry

    def register(
        self,
        name: str,
        compress: Codec,
        decompress: Codec,
        content_type: str,
        aliases: Iterable[str] = (),
    ) -> None:
        """Add (or replace) a compressor, sent under the header ``content_type``."""
        names = [name, *aliases]
        if not all(names) or not content_type:
            raise ImproperlyConfigured(
                f"a compressor needs non-empty names and content type: {names!r}, {content_type!r}"
            )
        compressor = Compressor(name, content_type, compress, decompress)
        for each in names:
            self._by_name[each] = compressor
            self._unavailable.pop(each, None)
        self._by_header[content_type] = compressor
        self._unavailable.pop(content_type, None)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def header_for(self, name: str) -> str:
        """The header value ``name`` travels under; validates a compression setting at start-up."""
        return self._get(name).content_type

    def _get(self, name: str) -> Compressor:
        found = self._by_name.get(name)
        if found is not None:
            return found
        missing = self._unavailable.get(name)
        if missing is not None:
            raise missing.error()
        raise ImproperlyConfigured(
            f"unknown compression {name!r}; registered: {sorted(self._by_name)}"
        )

    def compress(self, data: bytes, name: str) -> tuple[str, bytes]:
        """Compress ``data`` with ``name``: ``(header value, compressed bytes)``."""
        compressor = self._get(name)
        return compressor.content_type, compressor.compress(data)

    def decompress(self, data: bytes, header_value: str) -> bytes:
        """Undo the compression a message's ``compression`` header names."""
        compressor = self._by_header.get(header_value) or self._by_name.get(header_value)
        if compressor is None:
            missing = self._unavailable.get(header_value)
            if missing is not None:
                error = missing.error()
                raise DecodeError(str(error)) from error
            raise DecodeError(
                f"unknown compression header {header_value!r}; known: {sorted(self._by_header)}"
            )
        try:
            return compressor.decompress(data)
        except Exception as exc:  # zlib.error, OSError, LZMAError, ZstdError...: all "corrupt"
            raise DecodeError(
                f"cannot decompress body ({len(data)} bytes) with compression header "
                f"{header_value!r}: {type(exc).__name__}: {exc}"
            ) from exc


def _zlib_compress(data: bytes) -> bytes:
    return zlib.compress(data)


def _zlib_or_gzip_decompress(data: bytes) -> bytes:
    """kombu's "gzip" is zlib; a real gzip stream is told apart by its magic bytes."""
    if data[:2] == _GZIP_MAGIC:
        return gzip.decompress(data)
    return zlib.decompress(data)


def _zstd_codecs() -> tuple[Codec, Codec]:
    """zstandard's one-shot codecs. Decompression goes through a stream object, because a frame
    written by a streaming compressor carries no content size and the one-shot call refuses it.
    """
    import zstandard

    def compress(data: bytes) -> bytes:
        # a ZstdCompressor must not be shared between threads, and a thread pool may compress
        out: bytes = zstandard.ZstdCompressor().compress(data)
        return out

    def decompress(data: bytes) -> bytes:
        stream = zstandard.ZstdDecompressor().decompressobj()
        out: bytes = stream.decompress(data)
        if not stream.eof:
            raise ValueError("zstd frame is truncated")
        return out

    return compress, decompress


__all__ = ["BZ2", "GZIP", "LZMA", "ZSTD", "Codec", "CompressionRegistry", "Compressor"]
