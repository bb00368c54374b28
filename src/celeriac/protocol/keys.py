"""Loading the keys of signed messages from settings: PEM files or PEM text, Ed25519 only.

``security_key`` names the private key that signs (a path, or the PEM itself, e.g. from an
environment variable), ``security_key_password`` decrypts it when it is encrypted, and
``security_cert_store`` lists the public keys trusted to sign: a glob pattern (Celery's form, e.g.
``/etc/celeriac/trusted/*.pem``), a list of paths, or PEM text. Each trusted file may hold a public
key (``openssl pkey -pubout``) or an X.509 certificate whose key is Ed25519 (what
``openssl req -x509`` makes), so a Celery deployment's certificate files can be reused once their
keys are Ed25519. Every problem is an :class:`~celeriac.errors.ImproperlyConfigured` naming the
setting, raised when the app first signs or verifies (a worker at start-up).
"""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from celeriac.errors import ImproperlyConfigured

_PEM = "-----BEGIN "


def _read(value: str | bytes, setting: str) -> bytes:
    """PEM bytes from ``value``: the PEM itself, or the path of a file holding it."""
    if isinstance(value, bytes):
        return value
    if value.lstrip().startswith(_PEM):
        return value.encode()
    try:
        return Path(value).expanduser().read_bytes()
    except OSError as exc:
        raise ImproperlyConfigured(f"{setting}: cannot read {value!r}: {exc.strerror}") from exc


def load_private_key(
    value: str | bytes, password: str | bytes | None = None, *, setting: str = "security_key"
) -> Ed25519PrivateKey:
    """The Ed25519 private key in ``value`` (a path or PEM text)."""
    data = _read(value, setting)
    secret = password.encode() if isinstance(password, str) else password
    try:
        key = load_pem_private_key(data, secret)
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"{setting}: not a readable PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ImproperlyConfigured(
            f"{setting}: a {type(key).__name__.lstrip('_')} key; celeriac signs with Ed25519 "
            "(openssl genpkey -algorithm ed25519)"
        )
    return key


def _public_keys_in(data: bytes, origin: str, setting: str) -> list[Ed25519PublicKey]:
    keys: list[Ed25519PublicKey] = []
    blocks = [b"-----BEGIN " + part for part in data.split(b"-----BEGIN ")[1:]]
    if not blocks:
        raise ImproperlyConfigured(f"{setting}: {origin} holds no PEM block")
    for block in blocks:
        key: object
        try:
            if block.startswith(b"-----BEGIN CERTIFICATE-----"):
                key = x509.load_pem_x509_certificate(block).public_key()
            else:
                key = load_pem_public_key(block)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{setting}: {origin}: not a public key ({exc})") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ImproperlyConfigured(
                f"{setting}: {origin} holds a {type(key).__name__.lstrip('_')} key; "
                "celeriac verifies Ed25519 signatures only"
            )
        keys.append(key)
    return keys


def load_public_keys(
    value: str | bytes | Iterable[str | bytes], *, setting: str = "security_cert_store"
) -> list[Ed25519PublicKey]:
    """The trusted public keys: a glob pattern, PEM text, or a list of paths/PEM texts."""
    items: list[str | bytes]
    if isinstance(value, bytes):
        items = [value]
    elif isinstance(value, str):
        if value.lstrip().startswith(_PEM):
            items = [value]
        else:
            items = sorted(glob.glob(str(Path(value).expanduser()))) or [value]
    else:
        items = list(value)
    keys: list[Ed25519PublicKey] = []
    for item in items:
        origin = "the PEM given" if isinstance(item, bytes) or _PEM in str(item) else str(item)
        keys.extend(_public_keys_in(_read(item, setting), origin, setting))
    if not keys:
        raise ImproperlyConfigured(f"{setting}: no trusted public key found in {value!r}")
    return keys


def generate_key_pem(password: str | bytes | None = None) -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as ``(private PEM, public PEM)`` (``celeriac keys generate``)."""
    key = Ed25519PrivateKey.generate()
    secret = password.encode() if isinstance(password, str) else password
    encryption = BestAvailableEncryption(secret) if secret else NoEncryption()
    private = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, encryption)
    public = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    return private, public
