"""``amqps://`` and ``rediss://`` end to end, with real TLS on the wire.

The shared RabbitMQ and Redis speak plain TCP, and their configuration is not ours to change, so
each test puts a TLS-terminating proxy of its own (:mod:`tls_proxy`) in front of one of them, with
a throwaway CA made in the test's tmp dir. A task is sent, a real worker (in-process, threads
pool) runs it and its result comes back; every test then checks the proxy's handshake counters,
so none can pass over plain TCP by mistake. A client that does not trust the certificate (an
unrelated CA, or verification on with no CA given) must fail at once with a typed error naming
the server, password masked, rather than hang or fall back.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tls_proxy import Pki, TlsProxy, make_pki

import amqp_broker
from celeriac import Celeriac
from celeriac.errors import BackendError, TransportError
from celeriac.results.redis import RedisBackend
from celeriac.testing import worker_thread
from conftest import delete_redis_keys, require_service

BROKER_DB = 14
BACKEND_DB = 15
#: A failure must be reported well within this (a hang would hit pytest's timeout instead).
FAIL_FAST = 10.0
#: Never sent: every connection that carries it fails in the TLS handshake, before any AUTH.
SECRET = "s3cret-tls-pw"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def amqp_proxy(pki: Pki, vhost: None) -> Iterator[TlsProxy]:
    with TlsProxy(pki, 5672) as proxy:
        yield proxy


@pytest.fixture
def redis_proxy(pki: Pki) -> Iterator[TlsProxy]:
    require_service("Redis", 6379)
    with TlsProxy(pki, 6379) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def vhost() -> Iterator[None]:
    require_service("RabbitMQ", 5672)
    amqp_broker.ensure_vhost()
    yield
    amqp_broker.delete((), ["celeriac.control", "celeriac.dlx"])


def add_task(app: Celeriac) -> None:
    @app.task(name="tls.add")
    def add(x: int, y: int, pause: float = 0.0) -> int:
        time.sleep(pause)  # long enough that get() waits for the result, not just reads it
        return x + y


def expect_fast_failure(error: type[Exception], call: Any) -> Exception:
    """Run ``call``, which must raise ``error`` within ``FAIL_FAST`` seconds."""
    started = time.monotonic()
    with pytest.raises(error) as caught:
        call()
    assert time.monotonic() - started < FAIL_FAST, "a TLS failure took too long to report"
    return caught.value


def assert_refused_in_handshake(proxy: TlsProxy) -> None:
    # the client gives up as soon as it has sent its alert: the proxy may read it a moment later
    deadline = time.monotonic() + 5.0
    while proxy.failed_handshakes == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proxy.failed_handshakes >= 1, "the client never reached the TLS proxy"
    assert proxy.handshakes == 0, "a client that distrusts the certificate completed TLS"


# -- RabbitMQ: amqps:// ---------------------------------------------------------------------------
@pytest.mark.amqp
def test_amqps_task_runs_on_a_worker_and_its_result_comes_back(
    pki: Pki, amqp_proxy: TlsProxy
) -> None:
    queue = f"tls-{uuid.uuid4().hex[:8]}"
    app = Celeriac(
        "tls_amqp",
        broker=f"amqps://guest:guest@localhost:{amqp_proxy.port}/{amqp_broker.VHOST}",
        backend=f"memory://{uuid.uuid4().hex}",
        task_default_queue=queue,
        # Celery's broker_use_ssl keys, in the options rather than the URL
        broker_transport_options={
            "ssl": {"ca_certs": str(pki.ca_cert), "cert_reqs": "CERT_REQUIRED"}
        },
    )
    add_task(app)
    try:
        with worker_thread(app, timeout=10.0):
            assert app.send_task("tls.add", (2, 3)).get(timeout=10) == 5
    finally:
        app.close()
        amqp_broker.delete([queue, f"{queue}.dlq"])
    # the producer's connection and the worker's, at least: all of them over TLS
    assert amqp_proxy.handshakes >= 2
    assert amqp_proxy.failed_handshakes == 0


@pytest.mark.amqp
@pytest.mark.parametrize("trust", ["wrong-ca", "no-ca", "wrong-name"])
def test_amqps_untrusted_certificate_fails_with_a_redacted_transport_error(
    pki: Pki, amqp_proxy: TlsProxy, trust: str
) -> None:
    tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED"}
    if trust == "wrong-ca":
        tls["ca_certs"] = str(pki.other_ca_cert)
    elif trust == "wrong-name":
        # the right CA, but server_hostname names a host the certificate is not for: the
        # option must reach the handshake (aio-pika alone would check the URL's host)
        tls.update(ca_certs=str(pki.ca_cert), server_hostname="broker.invalid")
    url = f"amqps://guest:{SECRET}@localhost:{amqp_proxy.port}/{amqp_broker.VHOST}"
    app = Celeriac(
        "tls_amqp_bad",
        broker=url,
        backend=f"memory://{uuid.uuid4().hex}",
        task_default_queue=f"tls-{uuid.uuid4().hex[:8]}",
        broker_transport_options={"ssl": tls},
    )
    try:
        error = expect_fast_failure(TransportError, lambda: app.send_task("tls.add", (1, 1)))
    finally:
        app.close()
    text = str(error)
    assert f"amqps://guest:***@localhost:{amqp_proxy.port}/{amqp_broker.VHOST}" in text
    assert SECRET not in text
    assert "CERTIFICATE_VERIFY_FAILED" in text
    assert_refused_in_handshake(amqp_proxy)


# -- Redis: rediss:// broker and result backend ---------------------------------------------------
@pytest.mark.redis
def test_rediss_broker_and_backend_run_a_task_and_get_its_result(
    pki: Pki, redis_proxy: TlsProxy
) -> None:
    prefix = f"itest-tls-{uuid.uuid4().hex[:8]}:"
    where = f"localhost:{redis_proxy.port}"
    app = Celeriac(
        "tls_redis",
        # the CA both ways a user may give it: in the broker URL's query, in the backend options
        broker=f"rediss://{where}/{BROKER_DB}?ssl_ca_certs={pki.ca_cert}&ssl_cert_reqs=required",
        backend=f"rediss://{where}/{BACKEND_DB}",
        broker_transport_options={"key_prefix": prefix},
        result_backend_transport_options={
            "key_prefix": prefix,
            "ssl_ca_certs": str(pki.ca_cert),
            "ssl_cert_reqs": "CERT_REQUIRED",
        },
    )
    add_task(app)
    try:
        with worker_thread(app, timeout=10.0):
            result = app.send_task("tls.add", (20, 22, 0.2))
            assert result.get(timeout=10) == 42
        assert app.backend is not None
        assert app.backend.get_meta(result.id).status == "SUCCESS"
    finally:
        app.close()
        delete_redis_keys(f"redis://127.0.0.1:6379/{BROKER_DB}", prefix)
        delete_redis_keys(f"redis://127.0.0.1:6379/{BACKEND_DB}", prefix)
    assert redis_proxy.handshakes >= 2
    assert redis_proxy.failed_handshakes == 0


@pytest.mark.redis
@pytest.mark.parametrize("trust", ["wrong-ca", "no-ca"])
def test_rediss_broker_with_an_untrusted_certificate_fails_with_a_redacted_transport_error(
    pki: Pki, redis_proxy: TlsProxy, trust: str
) -> None:
    options: dict[str, Any] = {"key_prefix": f"itest-tls-{uuid.uuid4().hex[:8]}:"}
    if trust == "wrong-ca":
        options["ssl_ca_certs"] = str(pki.other_ca_cert)
    app = Celeriac(
        "tls_redis_bad",
        broker=f"rediss://:{SECRET}@localhost:{redis_proxy.port}/{BROKER_DB}",
        backend=f"memory://{uuid.uuid4().hex}",
        broker_transport_options=options,
    )
    try:
        error = expect_fast_failure(TransportError, lambda: app.send_task("tls.add", (1, 1)))
    finally:
        app.close()
    text = str(error)
    assert f"rediss://:***@localhost:{redis_proxy.port}/{BROKER_DB}" in text
    assert SECRET not in text
    assert "CERTIFICATE_VERIFY_FAILED" in text
    assert_refused_in_handshake(redis_proxy)


@pytest.mark.redis
def test_rediss_backend_with_a_wrong_ca_fails_with_a_redacted_backend_error(
    pki: Pki, redis_proxy: TlsProxy
) -> None:
    backend = RedisBackend(
        f"rediss://:{SECRET}@localhost:{redis_proxy.port}/{BACKEND_DB}",
        ssl_ca_certs=str(pki.other_ca_cert),
        key_prefix=f"itest-tls-{uuid.uuid4().hex[:8]}:",
    )
    try:
        error = expect_fast_failure(BackendError, lambda: backend.get_meta(uuid.uuid4().hex))
    finally:
        backend.close()
    text = str(error)
    assert f"rediss://localhost:{redis_proxy.port}/{BACKEND_DB}" in text
    assert SECRET not in text
    assert "CERTIFICATE_VERIFY_FAILED" in text
    assert_refused_in_handshake(redis_proxy)


def test_proxy_refuses_plain_tcp(pki: Pki) -> None:
    """The guard itself: a client that does not speak TLS gets nowhere and is counted failed."""
    require_service("Redis", 6379)
    with TlsProxy(pki, 6379) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            sock.settimeout(5)
            try:
                reply = sock.recv(64)
            except OSError:
                reply = b""
        assert b"PONG" not in reply
        assert_refused_in_handshake(proxy)
        assert proxy.failed_handshakes == 1
