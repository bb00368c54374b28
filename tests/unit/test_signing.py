"""Signed messages: the signature covers body and headers, keys load from settings, control
requests are fresh and never replayed."""

from __future__ import annotations

import datetime
import struct
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import NameOID

from celeriac.app.security import load_security
from celeriac.control.sealing import RequestGuard, reply_is_trusted, seal_reply, seal_request
from celeriac.errors import DecodeError, ImproperlyConfigured
from celeriac.protocol.keys import generate_key_pem, load_private_key, load_public_keys
from celeriac.protocol.message import SIGNATURE_HEADER, Message, task_message
from celeriac.protocol.signing import SignatureError, Signer, Verifier, key_id
from celeriac.testing import memory_app


def _message(body: bytes = b"[[2, 3], {}, {}]") -> Message:
    return task_message(
        task="proj.add",
        task_id="a3c6a1d0-0d3b-4f5a-9b44-1f4c1b1d2e3f",
        body=body,
        content_type="application/json",
        content_encoding="utf-8",
        args_repr="(2, 3)",
    )


@pytest.fixture
def signer() -> Signer:
    return Signer(ed25519.Ed25519PrivateKey.generate())


@pytest.fixture
def verifier(signer: Signer) -> Verifier:
    return Verifier.of([signer.private_key.public_key()])


def test_a_signed_message_verifies_and_names_its_key(signer: Signer, verifier: Verifier) -> None:
    signed = signer.sign(_message())
    assert signed.headers[SIGNATURE_HEADER].startswith(f"ed25519:{signer.kid}:")
    assert verifier.verify(signed) == signer.kid
    assert signer.kid == key_id(signer.private_key.public_key())
    assert len(signer.kid) == 16


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda m: Message(m.headers, b"[[2, 4], {}, {}]", m.content_type), id="body"),
        pytest.param(lambda m: m.with_headers(task="proj.rm_rf"), id="task name"),
        pytest.param(lambda m: m.with_headers(argsrepr="(1, 1)"), id="argsrepr"),
        pytest.param(lambda m: m.with_headers(eta="2030-01-01T00:00:00+00:00"), id="eta"),
        pytest.param(lambda m: m.with_headers(stamp="added"), id="a header added"),
        pytest.param(
            lambda m: Message(m.headers, m.body, "application/x-python-serialize"),
            id="content type",
        ),
    ],
)
def test_any_change_after_signing_is_refused(
    signer: Signer, verifier: Verifier, tamper: object
) -> None:
    signed = signer.sign(_message())
    changed = tamper(signed)  # type: ignore[operator]
    with pytest.raises(SignatureError, match="changed after signing"):
        verifier.verify(changed)


def test_headers_brokers_add_in_transit_do_not_break_a_signature(
    signer: Signer, verifier: Verifier
) -> None:
    signed = signer.sign(_message())
    moved = signed.with_headers(
        redelivered=True,
        **{
            "x-death": [{"count": 1, "queue": "q"}],
            "x-delivery-count": 2,
            "x-celeriac-deliveries": 3,
            "x-celeriac-reason": "lost",
        },
    )
    assert verifier.verify(moved) == signer.kid


def test_unsigned_unknown_and_malformed_signatures_say_why(
    signer: Signer, verifier: Verifier
) -> None:
    with pytest.raises(SignatureError, match="not signed"):
        verifier.verify(_message())
    stranger = Signer(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(SignatureError, match="not trusted"):
        verifier.verify(stranger.sign(_message()))
    for value in ("nonsense", "rsa:abc:def", "ed25519:" + signer.kid + ":!!!", 42):
        with pytest.raises(SignatureError):
            verifier.verify(_message().with_headers(**{SIGNATURE_HEADER: value}))


def test_a_key_ring_trusts_old_and_new_keys_during_a_rotation(signer: Signer) -> None:
    new = Signer(ed25519.Ed25519PrivateKey.generate())
    ring = Verifier.of([signer.private_key.public_key(), new.private_key.public_key()])
    assert ring.verify(signer.sign(_message())) == signer.kid
    assert ring.verify(new.sign(_message())) == new.kid
    after = Verifier.of([new.private_key.public_key()])
    with pytest.raises(SignatureError, match="not trusted"):
        after.verify(signer.sign(_message()))


# -- keys from settings ------------------------------------------------------------------------
def _write_pair(folder: Path, name: str, password: str | None = None) -> tuple[Path, Path]:
    private, public = generate_key_pem(password)
    (folder / f"{name}.key").write_bytes(private)
    (folder / f"{name}.pem").write_bytes(public)
    return folder / f"{name}.key", folder / f"{name}.pem"


def test_keys_load_from_paths_pem_text_globs_and_encrypted_files(tmp_path: Path) -> None:
    key, pub = _write_pair(tmp_path, "a")
    private = load_private_key(str(key))
    assert key_id(private.public_key()) == key_id(load_public_keys(str(pub))[0])
    assert key_id(load_private_key(key.read_text()).public_key()) == key_id(private.public_key())
    _write_pair(tmp_path, "b")
    assert len(load_public_keys(str(tmp_path / "*.pem"))) == 2
    assert len(load_public_keys([str(pub), pub.read_text()])) == 2
    secret, _ = _write_pair(tmp_path, "c", password="s3cret")
    assert load_private_key(str(secret), "s3cret")
    with pytest.raises(ImproperlyConfigured, match="security_key"):
        load_private_key(str(secret), "wrong")


def test_an_x509_certificate_with_an_ed25519_key_is_trusted(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "producer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, None)
    )
    path = tmp_path / "producer.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (trusted,) = load_public_keys(str(path))
    assert key_id(trusted) == key_id(key.public_key())


def test_bad_keys_fail_naming_the_setting(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ImproperlyConfigured, match=r"security_key: .*Ed25519"):
        load_private_key(rsa_pem)
    rsa_pub = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ImproperlyConfigured, match=r"security_cert_store: .*Ed25519"):
        load_public_keys(rsa_pub)
    with pytest.raises(ImproperlyConfigured, match="security_key: cannot read"):
        load_private_key(str(tmp_path / "missing.key"))
    with pytest.raises(ImproperlyConfigured, match="security_cert_store"):
        load_public_keys(str(tmp_path / "none-here-*.pem"))
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(ImproperlyConfigured, match="no PEM block"):
        load_public_keys(str(tmp_path / "junk.pem"))


def test_the_app_reads_its_security_from_settings(tmp_path: Path) -> None:
    key, pub = _write_pair(tmp_path, "producer")
    _, other = _write_pair(tmp_path, "other")
    assert memory_app("plain").security is None
    app = memory_app("signs", security_key=str(key), security_cert_store=str(tmp_path / "*.pem"))
    security = app.security
    assert security is not None and security.signer is not None
    assert security.verifier is not None and security.signer.kid in security.verifier.trusted
    assert len(security.verifier.trusted) == 2
    mismatched = memory_app("mismatch", security_key=str(key), security_certificate=str(other))
    with pytest.raises(ImproperlyConfigured, match="security_certificate"):
        _ = mismatched.security
    matched = memory_app("match", security_key=str(key), security_certificate=str(pub))
    assert matched.security is not None


def test_a_bad_key_setting_fails_when_first_read(tmp_path: Path) -> None:
    app = memory_app("broken", security_key=str(tmp_path / "nope.key"))
    with pytest.raises(ImproperlyConfigured, match="security_key"):
        load_security(app.conf)


# -- remote control --------------------------------------------------------------------------
def _request() -> Message:
    return Message(headers={"clock": 1, "expires": 0.0}, body=b'{"method": "shutdown"}')


def test_a_fresh_signed_request_passes_once(signer: Signer, verifier: Verifier) -> None:
    guard = RequestGuard(verifier)
    sealed = seal_request(_request(), signer)
    guard.check(sealed)
    with pytest.raises(DecodeError, match="replay"):
        guard.check(sealed)


def test_stale_unsigned_and_unstamped_requests_are_refused(
    signer: Signer, verifier: Verifier
) -> None:
    guard = RequestGuard(verifier, max_age=60)
    sealed = seal_request(_request(), signer)
    with pytest.raises(DecodeError, match="stale"):
        guard.check(sealed, now=time.time() + 120)
    with pytest.raises(SignatureError, match="not signed"):
        guard.check(_request())
    with pytest.raises(DecodeError, match="signed_at"):
        guard.check(signer.sign(_request()))
    forged = seal_request(_request(), Signer(ed25519.Ed25519PrivateKey.generate()))
    with pytest.raises(SignatureError, match="not trusted"):
        guard.check(forged)


def test_a_remembered_request_is_forgotten_after_its_window(
    signer: Signer, verifier: Verifier
) -> None:
    guard = RequestGuard(verifier, max_age=60)
    sealed = seal_request(_request(), signer)
    signed_at = float(sealed.headers["signed_at"])
    guard.check(sealed, now=signed_at)
    guard.check(seal_request(_request(), signer), now=signed_at + 1)
    guard._forget(signed_at + 500)
    assert not guard._seen


def test_replies_are_read_only_when_signed_by_a_trusted_key(
    signer: Signer, verifier: Verifier
) -> None:
    reply = Message(headers={"ticket": "t"}, body=b'{"w1": {"ok": "pong"}}')
    assert reply_is_trusted(reply, None)
    assert not reply_is_trusted(reply, verifier)
    assert reply_is_trusted(seal_reply(reply, signer), verifier)
    assert seal_reply(reply, None) is reply


def test_a_float_header_read_back_in_single_precision_still_verifies(
    signer: Signer, verifier: Verifier
) -> None:
    """RabbitMQ's client (pamqp) writes float headers as float32: 0.1 comes back as
    0.10000000149011612. The signature holds; a real change of the value does not."""
    signed = signer.sign(_message().with_headers(timelimit=[0.1, 30.25], weight=1e300))
    as_read = signed.with_headers(timelimit=[struct.unpack("<f", struct.pack("<f", 0.1))[0], 30.25])
    assert as_read.headers["timelimit"][0] != 0.1
    assert verifier.verify(as_read) == signer.kid
    with pytest.raises(SignatureError):
        verifier.verify(signed.with_headers(timelimit=[0.2, 30.25]))


def test_a_worker_with_a_bad_key_stops_at_start_naming_the_setting(tmp_path: Path) -> None:
    from celeriac.worker.worker import Worker

    app = memory_app("bad-key", security_cert_store=str(tmp_path / "none-*.pem"))
    with pytest.raises(ImproperlyConfigured, match="security_cert_store"):
        Worker(app, pool="threads")
