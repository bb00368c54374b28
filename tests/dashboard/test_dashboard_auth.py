"""Login, sessions, CSRF and security headers of the dashboard, without a worker: a dashboard on
a SQLite broker nobody else uses, served to Starlette's TestClient."""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_support import OPERATOR_TOKEN, VIEWER_TOKEN, csrf_of, login, serve, wait_until
from starlette.testclient import TestClient

from celeriac import Celeriac
from celeriac.dashboard.auth import (
    ENV_PREFIX,
    OPERATOR,
    VIEWER,
    Auth,
    Secret,
    hash_password,
    verify_password,
)
from celeriac.dashboard.redact import Redactor
from celeriac.dashboard.security import CSP
from celeriac.errors import ImproperlyConfigured


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = Celeriac("dash", broker=f"sqlite:///{tmp_path / 'broker.db'}", backend=None)
    try:
        with serve(app, tmp_path / "history.db") as (_, test_client):
            yield test_client
    finally:
        app.close()


# -- secrets ----------------------------------------------------------------------------------
def test_scrypt_hashes_verify_and_djangos_pbkdf2_too() -> None:
    encoded = hash_password("correct horse battery")
    assert encoded.startswith("scrypt$32768$8$1$")
    assert verify_password("correct horse battery", encoded)
    assert not verify_password("correct horse batterY", encoded)
    salt, iterations = "somesalt", 1000
    digest = hashlib.pbkdf2_hmac("sha256", b"s3cret-pass", salt.encode(), iterations)
    django = f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(digest).decode()}"
    assert verify_password("s3cret-pass", django)
    assert not verify_password("other", django)


def test_secrets_come_from_the_environment_and_a_bad_one_names_its_variable() -> None:
    auth = Auth.from_environ(
        {
            f"{ENV_PREFIX}PASSWORD_HASH": hash_password("operator-pass"),
            f"{ENV_PREFIX}READONLY_TOKEN": "a-viewer-token-long-enough",
        }
    )
    assert auth.generated_token is None
    assert auth.role_for("operator-pass") == OPERATOR
    assert auth.role_for("a-viewer-token-long-enough") == VIEWER
    assert auth.role_for("guess") is None
    with pytest.raises(ImproperlyConfigured, match=f"{ENV_PREFIX}PASSWORD_HASH"):
        Auth.from_environ({f"{ENV_PREFIX}PASSWORD_HASH": "plaintext"})
    with pytest.raises(ImproperlyConfigured, match=f"{ENV_PREFIX}READONLY_TOKEN"):
        Auth.from_environ({f"{ENV_PREFIX}READONLY_TOKEN": "short"})


def test_no_secret_set_makes_a_random_operator_token() -> None:
    first, second = Auth.from_environ({}), Auth.from_environ({})
    assert first.generated_token and second.generated_token
    assert first.generated_token != second.generated_token
    assert len(first.generated_token) >= 24
    assert first.role_for(first.generated_token) == OPERATOR


def test_sessions_are_signed_expire_and_end_when_a_secret_changes() -> None:
    auth = Auth([Secret(OPERATOR, token="t" * 20)], b"key")
    cookie = auth.issue(VIEWER)
    found = auth.session(cookie)
    assert found is not None and found.role == VIEWER
    body, signature = cookie.rsplit(".", 1)
    forged = base64.urlsafe_b64encode(
        base64.urlsafe_b64decode(body + "==").replace(b"viewer", b"operator")
    ).rstrip(b"=")
    assert auth.session(f"{forged.decode()}.{signature}") is None
    assert auth.session("garbage") is None
    rotated = Auth([Secret(OPERATOR, token="u" * 20)], b"key")
    assert rotated.session(cookie) is None
    auth.session_ttl = -1
    assert auth.session(auth.issue(OPERATOR)) is None


# -- the login --------------------------------------------------------------------------------
def test_pages_redirect_to_the_login_and_the_rest_answers_401(client: TestClient) -> None:
    for path in ("/", "/workers", "/tasks", "/queues", "/dead-letters", "/beat", "/audit"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login?next=")
    assert client.get("/metrics").status_code == 401
    assert client.post("/queues/purge", data={"queue": "celery"}).status_code == 401
    assert client.get("/healthz").text == "ok"


def test_logging_in_sets_a_strict_httponly_cookie_and_logging_out_ends_it(
    client: TestClient,
) -> None:
    page = client.get("/login")
    assert "HttpOnly" in page.headers["set-cookie"]
    response = client.post(
        "/login",
        data={"csrf": csrf_of(page.text), "secret": OPERATOR_TOKEN, "next": "/tasks"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/tasks"
    cookie = response.headers["set-cookie"].lower()
    assert "celeriac_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/tasks").status_code == 200
    home = client.get("/")
    client.post("/logout", data={"csrf": csrf_of(home.text)})
    assert client.get("/", follow_redirects=False).status_code == 303


def test_a_wrong_secret_a_missing_form_token_and_an_open_redirect_are_refused(
    client: TestClient,
) -> None:
    page = client.get("/login")
    wrong = client.post("/login", data={"csrf": csrf_of(page.text), "secret": "nope"})
    assert wrong.status_code == 401 and "Wrong password or token" in wrong.text
    no_token = client.post("/login", data={"secret": OPERATOR_TOKEN})
    assert no_token.status_code == 403
    page = client.get("/login")
    away = client.post(
        "/login",
        data={"csrf": csrf_of(page.text), "secret": VIEWER_TOKEN, "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert away.headers["location"] == "/"


def test_repeated_failures_are_throttled(client: TestClient) -> None:
    statuses = []
    for _ in range(12):
        page = client.get("/login")
        statuses.append(
            client.post("/login", data={"csrf": csrf_of(page.text), "secret": "x"}).status_code
        )
    assert statuses[:10] == [401] * 10 and statuses[-1] == 429


def test_a_bearer_token_reads_metrics_but_a_password_hash_is_not_a_bearer(
    client: TestClient,
) -> None:
    ok = client.get("/metrics", headers={"authorization": f"Bearer {VIEWER_TOKEN}"})
    assert ok.status_code == 200 and "celery_worker_up" in ok.text
    assert client.get("/metrics", headers={"authorization": "Bearer nope"}).status_code == 401


# -- headers and secrets on the page ----------------------------------------------------------
def test_every_response_has_strict_security_headers(client: TestClient) -> None:
    login(client, OPERATOR_TOKEN)
    for path in ("/login", "/", "/static/app.js", "/metrics", "/nope"):
        headers = client.get(path).headers
        assert headers["content-security-policy"] == CSP, path
        assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"
    assert client.get("/").headers["cache-control"] == "no-store"
    page = client.get("/").text
    assert "<script>" not in page and " style=" not in page and "onclick" not in page


def test_the_broker_password_is_never_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker that cannot be reached: its errors are shown and logged, its password never."""
    app = Celeriac(
        "dash",
        broker="redis://user:hunter2secret@127.0.0.1:1/0",
        backend="redis://:backendpass42@127.0.0.1:1/1",
    )
    caplog.set_level(logging.DEBUG, logger="celeriac")
    try:
        with serve(app, tmp_path / "history.db", poll_interval=30) as (dashboard, client):
            login(client, OPERATOR_TOKEN)
            started = time.monotonic()
            page = client.get("/").text
            assert "user:***@127.0.0.1:1" in page
            assert time.monotonic() - started < 10
            wait_until(
                lambda: dashboard.last_error is not None and bool(dashboard.cluster.poll_error),
                20,
                "the broker's errors",
            )
            csrf = csrf_of(page)
            purged = client.post("/queues/purge", data={"csrf": csrf, "queue": "celery"}).text
            assert "failed:" in purged
            texts = [purged, client.get("/metrics").text]
            for path in ("/", "/workers", "/queues", "/dead-letters", "/beat", "/audit"):
                texts.append(client.get(path).text)
            with client.stream("GET", "/live", params={"view": "queues"}) as stream:
                texts.append(next(line for line in stream.iter_lines() if line.startswith("data")))
    finally:
        app.close()
    assert 'id="poll-error"' in texts[4] and "Error 111 connecting" in texts[4]  # /queues
    texts.append(caplog.text)
    for text in texts:
        assert "hunter2secret" not in text and "backendpass42" not in text


def test_the_redactor_masks_url_passwords_and_the_apps_secrets() -> None:
    app = Celeriac(
        "dash",
        broker="amqp://u:first%40pass@h1//;amqp://u:second-pass@h2//",
        backend="redis://:third-pass@h/0",
        broker_transport_options={"sentinel_kwargs": {"password": "fourth-pass"}},
    )
    try:
        redact = Redactor.of_app(app)
    finally:
        app.close()
    assert redact("connecting to redis://x:anything-else@host:1/0 failed") == (
        "connecting to redis://x:***@host:1/0 failed"
    )
    text = "auth failed for first@pass, second-pass, third-pass and fourth-pass"
    assert redact(text) == "auth failed for ***, ***, *** and ***"
    assert redact("nothing secret here") == "nothing secret here"
