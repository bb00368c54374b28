"""What the dashboard tests share: the integration harness (real workers on a SQLite broker,
from ``tests/integration/worker_harness.py``, reached through ``sys.path`` as the parity suite
does), fixed secrets for both roles, a dashboard on a harness's broker served to Starlette's
TestClient, and logging in through the real login form."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

INTEGRATION_DIR = Path(__file__).resolve().parents[1] / "integration"
if str(INTEGRATION_DIR) not in sys.path:
    sys.path.insert(0, str(INTEGRATION_DIR))

from starlette.testclient import TestClient  # noqa: E402
from worker_harness import Harness, wait_until  # noqa: E402

from celeriac import Celeriac  # noqa: E402
from celeriac.dashboard.auth import OPERATOR, VIEWER, Auth, Secret  # noqa: E402
from celeriac.dashboard.config import DashboardConfig  # noqa: E402
from celeriac.dashboard.routes import create_app  # noqa: E402
from celeriac.dashboard.runtime import Dashboard  # noqa: E402

__all__ = [
    "OPERATOR_TOKEN",
    "VIEWER_TOKEN",
    "Harness",
    "csrf_of",
    "login",
    "make_auth",
    "serve",
    "wait_until",
]

OPERATOR_TOKEN = "operator-token-for-the-tests"
VIEWER_TOKEN = "viewer-token-for-the-tests"
BASE_URL = "http://127.0.0.1:5555"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def make_auth() -> Auth:
    return Auth([Secret(OPERATOR, token=OPERATOR_TOKEN), Secret(VIEWER, token=VIEWER_TOKEN)])


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, f"no CSRF token in the page:\n{html[:2000]}"
    return found.group(1)


def login(client: TestClient, secret: str) -> None:
    """Log in through the form (its CSRF token and cookie included)."""
    page = client.get("/login")
    response = client.post(
        "/login",
        data={"csrf": csrf_of(page.text), "secret": secret, "next": "/"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text


@contextlib.contextmanager
def serve(
    app: Celeriac, db: Path, auth: Auth | None = None, **config: Any
) -> Iterator[tuple[Dashboard, TestClient]]:
    """A dashboard on ``app``'s broker with its history in ``db``, started and stopped by a
    TestClient (its lifespan)."""
    options: dict[str, Any] = {"poll_interval": 0.3, "live_interval": 0.2, **config}
    dashboard = Dashboard(app, DashboardConfig(db=db, **options))
    client = TestClient(create_app(dashboard, auth or make_auth()), base_url=BASE_URL)
    with client:
        yield dashboard, client
