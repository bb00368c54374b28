"""The body codec of Celery's protocol v2: ``[args, kwargs, embed]``, serialized and compressed.

The body is a three-item list. ``embed`` carries the canvas links Celery expects::

    [[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]

Encoding serializes, then compresses; decoding checks the accept list first (a refused sender must
not make the worker decompress anything), then decompresses, deserializes and validates the shape,
so that the executor can trust ``args`` is a list and ``kwargs`` a dict of str keys. Every defect
raises :class:`~celeriac.errors.DecodeError` saying exactly what is wrong.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from celeriac.errors import DecodeError
from celeriac.protocol.compression import CompressionRegistry
from celeriac.protocol.message import Message
from celeriac.protocol.serializers import EncodeError, SerializerRegistry, encode_with

#: Celery's embed when a task has no canvas links; a partial embed is completed from it.
DEFAULT_EMBED: Mapping[str, None] = {
    "callbacks": None,
    "errbacks": None,
    "chain": None,
    "chord": None,
}


@dataclass(frozen=True, slots=True)
class Codecs:
    """The serializers and compressors an app uses, passed around as one value."""

    serializers: SerializerRegistry
    compressors: CompressionRegistry

    @classmethod
    def with_defaults(cls) -> Codecs:
        return cls(SerializerRegistry.with_defaults(), CompressionRegistry.with_defaults())


@dataclass(frozen=True, slots=True)
class EncodedBody:
    """A body ready for :func:`celeriac.protocol.message.task_message`.

    ``compression`` is the header value (``application/x-gzip``), or ``None`` when uncompressed.
    """

    body: bytes
    content_type: str
    content_encoding: str
    compression: str | None = None


class BodyEncoder:
    """Encodes the bodies of sends that share an embed, a serializer and a compression.

    A batch (``send_many``) makes one and encodes each message's arguments with it: the embed
    is completed and the serializer looked up once, not per message. :func:`encode_body` is the
    one-off use of the same code, so a batch and a single send give the same bytes.
    """

    __slots__ = (
        "_codecs",
        "_compression",
        "_embed",
        "_found",
        "compression",
        "content_encoding",
        "content_type",
    )

    def __init__(
        self,
        embed: Mapping[str, Any] | None,
        *,
        serializer: str,
        compression: str | None,
        codecs: Codecs,
    ) -> None:
        found = codecs.serializers.get(serializer)  # an unknown name fails before any message
        self._codecs = codecs
        self._found = found
        self._compression = compression
        self._embed = {**DEFAULT_EMBED, **embed} if embed else dict(DEFAULT_EMBED)
        self.content_type = found.content_type
        # content_encoding keeps describing the *decompressed* bytes, as kombu's does
        self.content_encoding = found.content_encoding
        #: The ``compression`` header value (``application/x-gzip``), or ``None``.
        self.compression = codecs.compressors.header_for(compression) if compression else None

    def encode(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes:
        """Serialize ``[args, kwargs, embed]``, then compress it if asked.

        Non-str kwargs keys are refused here (:class:`EncodeError`): json would silently turn
        them into strings and msgpack would produce a body no worker reads back.
        """
        # exact types first: an ABC isinstance costs microseconds on every send
        if type(args) not in (tuple, list) and (
            isinstance(args, str | bytes) or not isinstance(args, Sequence)
        ):
            raise EncodeError(f"task args must be a list or tuple, not {type(args).__name__}")
        if type(kwargs) is not dict and not isinstance(kwargs, Mapping):
            raise EncodeError(f"task kwargs must be a dict, not {type(kwargs).__name__}")
        if kwargs:
            bad_keys = [key for key in kwargs if not isinstance(key, str)]
            if bad_keys:
                raise EncodeError(f"task kwargs keys must be str, got {bad_keys[:5]!r}")
        data = encode_with(self._found, [list(args), dict(kwargs), self._embed])
        if self._compression:
            data = self._codecs.compressors.compress(data, self._compression)[1]
        return data


def encode_body(
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    embed: Mapping[str, Any] | None,
    *,
    serializer: str,
    compression: str | None,
    codecs: Codecs,
) -> EncodedBody:
    """Serialize ``[args, kwargs, embed]`` with ``serializer``, then compress it if asked (see
    :meth:`BodyEncoder.encode`)."""
    encoder = BodyEncoder(embed, serializer=serializer, compression=compression, codecs=codecs)
    body = encoder.encode(args, kwargs)
    return EncodedBody(body, encoder.content_type, encoder.content_encoding, encoder.compression)


def decode_body(
    message: Message,
    *,
    accept: Collection[str],
    codecs: Codecs,
) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """``(args, kwargs, embed)`` of a protocol v2 message; a missing embed comes back as ``{}``."""
    _check_numbers(message)
    serializers = codecs.serializers
    serializers.ensure_accepted(message.content_type, accept)
    data = message.body
    header = message.headers.get("compression")
    if header:
        data = codecs.compressors.decompress(data, str(header))
    payload = serializers.decode(data, message.content_type, message.content_encoding)
    return _validate(payload)


def _check_numbers(message: Message) -> None:
    """The ``retries`` header and ``priority`` property, read as ints when the worker builds the
    request, must be readable: a message where they are not is refused here with the others
    (any other exception would make the worker requeue it, and the same message come back)."""
    try:
        message.retries  # noqa: B018 - read for its check
    except (TypeError, ValueError, OverflowError) as exc:
        raise DecodeError(f"header 'retries' is not an integer: {exc}") from exc
    try:
        message.priority  # noqa: B018 - read for its check
    except (TypeError, ValueError, OverflowError) as exc:
        raise DecodeError(f"property 'priority' is not an integer: {exc}") from exc


def _validate(payload: Any) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """Check the body's shape; tuples are accepted because Celery pickles ``(args, kwargs, embed)``
    as tuples, and yaml may hand back either.
    """
    if not isinstance(payload, list | tuple):
        raise DecodeError(
            f"task body is a {type(payload).__name__}, expected a 3-item list "
            "[args, kwargs, embed] (protocol v2)"
        )
    if len(payload) != 3:
        raise DecodeError(
            f"task body has {len(payload)} items, expected 3: [args, kwargs, embed] (protocol v2)"
        )
    args, kwargs, embed = payload
    if not isinstance(args, list | tuple):
        raise DecodeError(f"task args (body item 0) is a {type(args).__name__}, expected a list")
    if not isinstance(kwargs, dict):
        raise DecodeError(
            f"task kwargs (body item 1) is a {type(kwargs).__name__}, expected a dict"
        )
    bad_keys = [key for key in kwargs if not isinstance(key, str)]
    if bad_keys:
        raise DecodeError(f"task kwargs (body item 1) has non-str keys: {bad_keys[:5]!r}")
    if embed is None:
        embed = {}
    elif not isinstance(embed, dict):
        raise DecodeError(
            f"task embed (body item 2) is a {type(embed).__name__}, expected a dict or null"
        )
    return list(args), kwargs, embed


__all__ = ["DEFAULT_EMBED", "BodyEncoder", "Codecs", "EncodedBody", "decode_body", "encode_body"]
