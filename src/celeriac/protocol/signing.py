"""Signed messages (the ``auth`` bundle): Ed25519 signatures over a message's body and headers.

A producer holding a private key adds one header, ``celeriac-signature``, of the form
``ed25519:<key id>:<signature in base64url>``. A worker that trusts a set of public keys checks
it before anything in the body is deserialized or decompressed: a message that is unsigned,
signed by a key it does not trust, or changed after signing (body, content type, any header) is
refused with :class:`SignatureError` naming why, and the worker dead-letters it.

What is signed (:func:`signed_bytes`): a version tag, the key id, the content type and encoding,
the headers as canonical JSON (sorted keys) without the signature itself and without the headers
a broker adds or rewrites in transit (RabbitMQ's ``x-death`` family and ``x-delivery-count``,
celeriac's own ``x-celeriac-*`` bookkeeping, kombu's ``redelivered`` mark), and the body bytes as
sent (after compression: a tampered body is refused before it is decompressed). Each field is
length-prefixed, so no two different messages sign the same bytes.

Key ids are the first 16 hex digits of the SHA-256 of the raw public key, so a key ring needs no
naming scheme and rotation is: trust the new public key on every worker, switch the producers to
the new private key, then drop the old public key. Not covered (see the threat model in the
docs): a replay of a message captured whole, and the message properties (priority, reply-to),
which brokers rewrite.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from celeriac.errors import DecodeError
from celeriac.protocol.message import SIGNATURE_HEADER, Message

#: The scheme tag in the header, and the domain-separation tag in what is signed.
SCHEME = "ed25519"
_VERSION = b"celeriac-signed-message/1"
#: Headers that brokers add or change in transit: never signed, never compared.
_TRANSIT_HEADERS = frozenset({SIGNATURE_HEADER, "redelivered", "x-delivery-count"})
_TRANSIT_PREFIXES = ("x-celeriac-", "x-death", "x-first-death", "x-last-death")
_FLOAT32 = struct.Struct("<f")


class SignatureError(DecodeError):
    """A message's signature is missing, malformed, from an untrusted key, or does not match."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """The id of a public key: 16 hex digits of the SHA-256 of its 32 raw bytes."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _signed_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: _canonical(value)
        for name, value in headers.items()
        if name not in _TRANSIT_HEADERS and not name.startswith(_TRANSIT_PREFIXES)
    }


def _canonical(value: Any) -> Any:
    """A header value as every broker hands it back. RabbitMQ's client library (pamqp) writes
    a float header in single precision, so floats are signed at that precision: rounded to the
    nearest float32 on both sides, the producer's value and the one a worker reads agree."""
    if isinstance(value, float):
        try:
            return _FLOAT32.unpack(_FLOAT32.pack(value))[0]
        except (OverflowError, struct.error):
            return value
    if isinstance(value, Mapping):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    return value


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(8, "big") + data


def signed_bytes(message: Message, kid: str) -> bytes:
    """What a signature covers, length-prefixed field by field (see the module docstring)."""
    try:
        headers = orjson.dumps(
            _signed_headers(message.headers),
            option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
        )
    except TypeError as exc:
        raise SignatureError(f"message headers cannot be signed (not JSON): {exc}") from exc
    return b"".join(
        (
            _field(_VERSION),
            _field(kid.encode()),
            _field(message.content_type.encode()),
            _field(message.content_encoding.encode()),
            _field(headers),
            _field(message.body),
        )
    )


@dataclass(frozen=True)
class Signer:
    """Signs messages with one private key (a producer's, or a worker's for what it sends)."""

    private_key: Ed25519PrivateKey
    kid: str = field(default="")

    def __post_init__(self) -> None:
        if not self.kid:
            object.__setattr__(self, "kid", key_id(self.private_key.public_key()))

    def sign(self, message: Message) -> Message:
        """``message`` with its signature header (any earlier signature replaced)."""
        signature = self.private_key.sign(signed_bytes(message, self.kid))
        token = base64.urlsafe_b64encode(signature).decode("ascii").rstrip("=")
        return replace(
            message, headers={**message.headers, SIGNATURE_HEADER: f"{SCHEME}:{self.kid}:{token}"}
        )

    def sign_bytes(self, data: bytes) -> str:
        """A detached signature of ``data`` in the header's form (control requests and replies)."""
        token = base64.urlsafe_b64encode(self.private_key.sign(data)).decode("ascii").rstrip("=")
        return f"{SCHEME}:{self.kid}:{token}"


@dataclass(frozen=True)
class Verifier:
    """Checks signatures against a ring of trusted public keys, by key id."""

    trusted: Mapping[str, Ed25519PublicKey]

    @classmethod
    def of(cls, keys: Iterable[Ed25519PublicKey]) -> Verifier:
        return cls({key_id(key): key for key in keys})

    def verify(self, message: Message) -> str:
        """The id of the key that signed ``message``; raises :class:`SignatureError` otherwise."""
        value = message.headers.get(SIGNATURE_HEADER)
        if value is None:
            raise SignatureError("the message is not signed (signing is required here)")
        kid, signature = self._parse(value)
        self._check(kid, signature, signed_bytes(message, kid))
        return kid

    def verify_bytes(self, data: bytes, value: object) -> str:
        """Check a detached signature (:meth:`Signer.sign_bytes`) of ``data``."""
        if value is None:
            raise SignatureError("not signed (signing is required here)")
        kid, signature = self._parse(value)
        self._check(kid, signature, data)
        return kid

    def _parse(self, value: object) -> tuple[str, bytes]:
        if not isinstance(value, str) or value.count(":") != 2:
            raise SignatureError(f"malformed {SIGNATURE_HEADER} header")
        scheme, kid, token = value.split(":")
        if scheme != SCHEME:
            raise SignatureError(f"unknown signature scheme {scheme[:32]!r} (expected {SCHEME})")
        try:
            signature = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError) as exc:
            raise SignatureError(f"malformed {SIGNATURE_HEADER} header: {exc}") from exc
        return kid, signature

    def _check(self, kid: str, signature: bytes, data: bytes) -> None:
        key = self.trusted.get(kid)
        if key is None:
            raise SignatureError(f"signed by key {kid[:32]!r}, which is not trusted here")
        try:
            key.verify(signature, data)
        except InvalidSignature:
            raise SignatureError(
                f"bad signature from key {kid!r}: the message was changed after signing"
            ) from None
