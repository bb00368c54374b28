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

**A decompressed-size limit.** A few kilobytes of zlib, bz2, lzma or zstd can expand to
gigabytes (a compression bomb), so a worker never inflates a body past
:attr:`CompressionRegistry.max_size` (:data:`MAX_DECOMPRESSED_SIZE`, 64 MiB, by default). The
built-in codecs decompress incrementally with a bound on their output, so a bomb is refused after
at most the limit (plus one codec step) has been produced, never after it was inflated whole;
the refusal is a :class:`~celeriac.errors.DecodeError` naming the codec and the limit. A codec
registered by the user decompresses in one go (its signature gives no bound to pass) and its
result is measured afterwards: register a bounded one for untrusted producers.

**Imported when used.** Every app builds a registry, few compress: the codecs' modules (bz2,
gzip, lzma, zstandard: ~6 ms together) are imported by the first call that needs them, and
zstandard's presence is found out the first time ``zstd`` is asked for, not at start-up.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from celeriac.errors import DecodeError, ImproperlyConfigured
from celeriac.protocol.serializers import Unavailable

GZIP = "application/x-gzip"
BZ2 = "application/x-bz2"
LZMA = "application/x-lzma"
ZSTD = "application/zstd"

_GZIP_MAGIC = b"\x1f\x8b"
#: The names and the header of the built-in zstd, loaded when one of them is first asked for.
_ZSTD_KEYS = ("zstd", "zstandard", ZSTD)

Codec = Callable[[bytes], bytes]
#: A decompressor that stops once its output would pass ``limit`` bytes (see :class:`TooLarge`).
BoundedCodec = Callable[[bytes, int], bytes]

#: The default of :attr:`CompressionRegistry.max_size`: the most bytes a body may decompress to.
MAX_DECOMPRESSED_SIZE = 64 * 1024 * 1024
#: The output a bounded decompressor asks its codec for at a time (see :func:`_drain`).
_OUTPUT_STEP = 4 * 1024 * 1024
#: The input a bounded decompressor gives its codec at a time (see :func:`_drain`).
_INPUT_STEP = 64 * 1024
#: zstd is fed this many input bytes at a time: zstd's densest block (an RLE block, 3 bytes of
#: header for 128 KiB) bounds one step's output to about 11 MiB past the limit.
_ZSTD_STEP = 256


class TooLarge(Exception):
    """Raised by a bounded decompressor whose output would pass its limit."""


@dataclass(frozen=True, slots=True)
class Compressor:
    """One compression method: its name, the header value it travels under, and its two codecs."""

    name: str
    content_type: str
    compress: Codec
    decompress: Codec
    #: The built-ins' incremental decompressor, bounded (``None`` for a user's codec).
    bounded: BoundedCodec | None = None


class CompressionRegistry:
    """Compressors by name, alias and header value.

    An unknown *name* when sending is a configuration mistake (:class:`ImproperlyConfigured`); an
    unknown *header* when receiving is a bad message (:class:`DecodeError`), so the worker
    dead-letters it and carries on.
    """

    def __init__(self, max_size: int = MAX_DECOMPRESSED_SIZE) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ImproperlyConfigured(
                f"the decompressed-size limit must be a positive int of bytes, not {max_size!r}"
            )
        #: The most bytes a body may decompress to; more is a :class:`DecodeError`.
        self.max_size = max_size
        self._by_name: dict[str, Compressor] = {}
        self._by_header: dict[str, Compressor] = {}
        self._unavailable: dict[str, Unavailable] = {}
        #: Whether the built-in zstd is still to be tried (see :meth:`_load_zstd`); cleared
        #: under the lock once the outcome is recorded, so a thread that sees it cleared finds
        #: the compressor (or its absence) too.
        self._zstd_pending = False
        self._zstd_lock = threading.Lock()

    @classmethod
    def with_defaults(cls, max_size: int = MAX_DECOMPRESSED_SIZE) -> CompressionRegistry:
        """zlib/gzip, bz2 and lzma/xz always; zstd when the ``zstandard`` package imports
        (tried when first asked for, see the module docstring)."""
        registry = cls(max_size)
        builtins = (
            ("zlib", _zlib_compress, _zlib_or_gzip_decompress, _zlib_or_gzip_bounded, GZIP, "gzip"),
            ("bz2", _bz2_compress, _bz2_decompress, _bz2_bounded, BZ2, "bzip2"),
            ("lzma", _lzma_compress, _lzma_decompress, _lzma_bounded, LZMA, "xz"),
        )
        for name, compress, decompress, bounded, header, alias in builtins:
            registry._add(Compressor(name, header, compress, decompress, bounded), (name, alias))
        registry._zstd_pending = True
        return registry

    def _load_zstd(self) -> None:
        """Register the built-in zstd, or remember it as unavailable. Runs before anything
        else can claim its names or header (:meth:`register` calls it first when it would), so
        the outcome is what registering it in :meth:`with_defaults` would have given."""
        with self._zstd_lock:
            if not self._zstd_pending:  # another thread loaded it meanwhile
                return
            try:
                compress, decompress = _zstd_codecs()
                bounded = _zstd_bounded()
            except ImportError:
                missing = Unavailable(
                    "zstd", ZSTD, 'pip install "celeriac[zstd]"', kind="compression"
                )
                for key in _ZSTD_KEYS:
                    self._unavailable[key] = missing
            else:
                self._add(
                    Compressor("zstd", ZSTD, compress, decompress, bounded), ("zstd", "zstandard")
                )
            self._zstd_pending = False

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
        if self._zstd_pending and any(key in _ZSTD_KEYS for key in (*names, content_type)):
            self._load_zstd()  # the built-in replaced: register it first, so that this one wins
        self._add(Compressor(name, content_type, compress, decompress), names)

    def _add(self, compressor: Compressor, names: Iterable[str]) -> None:
        for each in names:
            self._by_name[each] = compressor
            self._unavailable.pop(each, None)
        self._by_header[compressor.content_type] = compressor
        self._unavailable.pop(compressor.content_type, None)

    def __contains__(self, name: object) -> bool:
        if self._zstd_pending and name in _ZSTD_KEYS:
            self._load_zstd()
        return name in self._by_name

    def header_for(self, name: str) -> str:
        """The header value ``name`` travels under; validates a compression setting at start-up."""
        return self._get(name).content_type

    def _get(self, name: str) -> Compressor:
        found = self._by_name.get(name)
        if found is not None:
            return found
        if self._zstd_pending:  # zstd asked for, or an error that lists what is registered
            self._load_zstd()
            return self._get(name)
        # read again: another thread may have loaded zstd between the two lookups above (a load
        # fills the tables before it clears the pending flag)
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
        if compressor is None and self._zstd_pending:
            self._load_zstd()
            return self.decompress(data, header_value)
        if compressor is None:  # read again, as in _get()
            compressor = self._by_header.get(header_value) or self._by_name.get(header_value)
        if compressor is None:
            missing = self._unavailable.get(header_value)
            if missing is not None:
                error = missing.error()
                raise DecodeError(str(error)) from error
            raise DecodeError(
                f"unknown compression header {header_value!r}; known: {sorted(self._by_header)}"
            )
        limit = self.max_size
        try:
            if compressor.bounded is not None:
                out = compressor.bounded(data, limit)
            else:
                out = compressor.decompress(data)
                if len(out) > limit:
                    raise TooLarge
        except TooLarge:
            raise DecodeError(
                f"body ({len(data)} bytes) decompresses to more than the limit of {limit} bytes "
                f"with {compressor.name} (compression header {header_value!r}): refused as a "
                "possible compression bomb"
            ) from None
        except Exception as exc:  # zlib.error, OSError, LZMAError, ZstdError...: all "corrupt"
            raise DecodeError(
                f"cannot decompress body ({len(data)} bytes) with compression header "
                f"{header_value!r}: {type(exc).__name__}: {exc}"
            ) from exc
        return out


def _zlib_compress(data: bytes) -> bytes:
    return zlib.compress(data)


def _zlib_or_gzip_decompress(data: bytes) -> bytes:
    """kombu's "gzip" is zlib; a real gzip stream is told apart by its magic bytes."""
    if data[:2] == _GZIP_MAGIC:
        import gzip  # rare: kombu's "gzip" is zlib; see the module docstring

        return gzip.decompress(data)
    return zlib.decompress(data)


def _drain(new: Callable[[], Any], data: bytes, limit: int, *, members: bool) -> bytes:
    """Run a ``zlib``/``bz2``/``lzma`` decompressor object over ``data``, never producing more
    than ``limit + 1`` bytes (:class:`TooLarge` then).

    Both sides go in steps: the output is asked for :data:`_OUTPUT_STEP` bytes at a time (a
    codec's output buffer is copied once more when it is finished, so one big step would cost
    twice the limit), the input is given :data:`_INPUT_STEP` bytes at a time (zlib copies the
    input it has not read yet after every step). ``members``: concatenated streams (gzip
    members, bz2 and xz streams) are read one after the other, as the one-shot functions do.
    """
    parts: list[bytes] = []
    total = 0
    view = memoryview(data)
    pos = 0
    engine = new()
    while True:
        if _more_input(engine):
            feed: bytes | memoryview = _pending(engine)
        else:
            feed = view[pos : pos + _INPUT_STEP]
            pos += len(feed)
        wanted = min(_OUTPUT_STEP, limit + 1 - total)
        chunk = engine.decompress(feed, wanted)
        total += len(chunk)
        if total > limit:
            raise TooLarge
        parts.append(chunk)
        if engine.eof:
            pos -= len(engine.unused_data)  # what follows this stream, given back
            if not members or pos >= len(view):
                return b"".join(parts)
            engine = new()
        elif len(chunk) < wanted and not _more_input(engine) and pos >= len(view):
            raise ValueError("compressed stream is truncated")


def _pending(engine: Any) -> bytes:
    """The input to give a decompressor object again: zlib hands back what it did not read
    (``unconsumed_tail``), bz2 and lzma keep it inside and take ``b""``."""
    return getattr(engine, "unconsumed_tail", b"")


def _more_input(engine: Any) -> bool:
    """Whether a decompressor object still holds input it has not turned into output."""
    tail = getattr(engine, "unconsumed_tail", None)  # zlib
    if tail is not None:
        return bool(tail)
    return not engine.needs_input  # bz2, lzma


def _zlib_or_gzip_bounded(data: bytes, limit: int) -> bytes:
    if data[:2] == _GZIP_MAGIC:
        return _drain(lambda: zlib.decompressobj(31), data, limit, members=True)
    return _drain(zlib.decompressobj, data, limit, members=False)


def _bz2_bounded(data: bytes, limit: int) -> bytes:
    import bz2

    return _drain(bz2.BZ2Decompressor, data, limit, members=True)


def _lzma_bounded(data: bytes, limit: int) -> bytes:
    import lzma

    return _drain(lzma.LZMADecompressor, data, limit, members=True)


# bz2 and lzma are imported on first use (see the module docstring); after that, the import
# statement is a dictionary lookup, nothing beside the codec's own work.


def _bz2_compress(data: bytes) -> bytes:
    import bz2

    return bz2.compress(data)


def _bz2_decompress(data: bytes) -> bytes:
    import bz2

    return bz2.decompress(data)


def _lzma_compress(data: bytes) -> bytes:
    import lzma

    return lzma.compress(data)


def _lzma_decompress(data: bytes) -> bytes:
    import lzma

    return lzma.decompress(data)


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


def _zstd_bounded() -> BoundedCodec:
    """zstandard's decompression, bounded (see :class:`TooLarge`)."""
    import zstandard

    def bounded(data: bytes, limit: int) -> bytes:
        # zstandard's decompression object takes no output bound: it is fed a few bytes at a
        # time instead, which bounds each step's output (see _ZSTD_STEP); frames that follow
        # one another are read one after the other, as the one-shot call does
        parts: list[bytes] = []
        total = 0
        view = memoryview(data)
        stream = zstandard.ZstdDecompressor().decompressobj()
        start = 0
        while start < len(view):
            chunk = stream.decompress(view[start : start + _ZSTD_STEP])
            start += _ZSTD_STEP
            total += len(chunk)
            if total > limit:
                raise TooLarge
            parts.append(chunk)
            if stream.eof:
                rest = stream.unused_data
                start -= len(rest)
                if not rest:
                    break
                stream = zstandard.ZstdDecompressor().decompressobj()
        if not stream.eof:
            raise ValueError("zstd frame is truncated")
        return b"".join(parts)

    return bounded


__all__ = [
    "BZ2",
    "GZIP",
    "LZMA",
    "MAX_DECOMPRESSED_SIZE",
    "ZSTD",
    "BoundedCodec",
    "Codec",
    "CompressionRegistry",
    "Compressor",
]
