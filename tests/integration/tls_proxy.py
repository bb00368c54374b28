"""A TLS-terminating TCP proxy of a test's own, and a throwaway CA to trust it by.

No TLS server runs here, and the shared Redis and RabbitMQ must keep their configuration, so a
TLS test puts this proxy in front of one of them: the client speaks TLS to ``127.0.0.1:<free
port>``, the proxy decrypts and relays plain bytes to the real server. The proxy counts the
handshakes it completed and the ones that failed, so a test can assert that TLS was on the wire
(a client that silently fell back to plain TCP would fail the handshake and count nothing
completed), and that a client which distrusts the certificate never got past the handshake.

The certificates (:func:`make_pki`) are made with ``cryptography`` in the test's tmp dir: a CA,
a server certificate for ``localhost`` and ``127.0.0.1`` signed by it, and an unrelated second
CA for the "wrong CA" cases. Each certificate carries the key identifiers and key usages that
strict X.509 verification (Python 3.13's default ``VERIFY_X509_STRICT``) asks for.

The proxy runs an asyncio loop in a daemon thread; :meth:`TlsProxy.stop` (or leaving the
``with`` block) closes the listener and every relayed connection and joins the thread, bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
import threading
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_START_TIMEOUT = 5.0
_STOP_TIMEOUT = 5.0
_HANDSHAKE_TIMEOUT = 5.0
_CHUNK = 65536


@dataclass(frozen=True)
class Pki:
    """Paths of the throwaway certificates (PEM): what a test names in its TLS options."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    other_ca_cert: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _server(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def make_pki(directory: Path) -> Pki:
    """A CA, a ``localhost``/``127.0.0.1`` server certificate it signed, and an unrelated CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("celeriac test CA")
    server_key, server_cert = _server(ca_key, ca_cert)
    _other_key, other_cert = _ca("celeriac unrelated CA")
    key_path = directory / "server.key"
    key_path.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return Pki(
        ca_cert=_write_cert(directory / "ca.pem", ca_cert),
        server_cert=_write_cert(directory / "server.pem", server_cert),
        server_key=key_path,
        other_ca_cert=_write_cert(directory / "other-ca.pem", other_cert),
    )


class TlsProxy:
    """TLS on ``127.0.0.1:<port>`` relayed as plain TCP to ``upstream``; counts handshakes.

    Use as a context manager, or call :meth:`start` and (in a ``finally``) :meth:`stop`.
    """

    def __init__(self, pki: Pki, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(pki.server_cert, pki.server_key)
        self.port = 0
        self._lock = threading.Lock()
        self._handshakes = 0
        self._failed_handshakes = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    # -- counters (read from the test's thread) -------------------------------------------------
    @property
    def handshakes(self) -> int:
        """TLS handshakes completed: connections that really spoke TLS to this proxy."""
        with self._lock:
            return self._handshakes

    @property
    def failed_handshakes(self) -> int:
        """Connections that failed or abandoned the TLS handshake (a distrustful client...)."""
        with self._lock:
            return self._failed_handshakes

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> TlsProxy:
        self._thread = threading.Thread(target=self._run, name="tls-proxy", daemon=True)
        self._thread.start()
        if not self._started.wait(_START_TIMEOUT):
            raise RuntimeError("the TLS proxy did not start in time")
        if self._error is not None:
            raise RuntimeError(f"the TLS proxy did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        """Close the listener and every relayed connection; join the thread (bounded)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(self._shutdown)
        thread.join(_STOP_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError("the TLS proxy did not stop in time")
        self._loop = self._thread = None

    def __enter__(self) -> TlsProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the proxy's own thread -----------------------------------------------------------------
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                # plain TCP first: the handshake is done in _relay, where its failure is seen
                asyncio.start_server(self._relay, "127.0.0.1", 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:
            self._error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _shutdown(self) -> None:
        loop = self._loop
        if loop is None:
            return
        if self._server is not None:
            self._server.close()
        for task in list(self._relays):
            task.cancel()

        async def finish() -> None:
            if self._relays:
                await asyncio.wait(list(self._relays), timeout=_STOP_TIMEOUT / 2)
            if self._server is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._server.wait_closed(), _STOP_TIMEOUT / 2)
            loop.stop()

        loop.create_task(finish())

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: the TLS handshake, then a relay to the upstream server.

        The handshake is awaited here rather than by ``start_server(ssl=...)``, whose failed
        handshakes asyncio only logs in debug mode: here each one is counted.
        """
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            try:
                await writer.start_tls(self.context, ssl_handshake_timeout=_HANDSHAKE_TIMEOUT)
            except (TimeoutError, OSError):  # ssl.SSLError is an OSError
                with self._lock:
                    self._failed_handshakes += 1
                return
            with self._lock:
                self._handshakes += 1
            upstream_reader, to_upstream = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), _HANDSHAKE_TIMEOUT
            )
            upstream_writer = to_upstream
            pipes = [
                asyncio.create_task(self._pipe(reader, to_upstream)),
                asyncio.create_task(self._pipe(upstream_reader, writer)),
            ]
            try:
                # either side closing ends the relay: the other side is closed below
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        except (TimeoutError, OSError):
            pass
        finally:
            for closing in (writer, upstream_writer):
                if closing is not None:
                    closing.transport.abort()
            self._relays.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := await reader.read(_CHUNK):
                writer.write(data)
                await writer.drain()
