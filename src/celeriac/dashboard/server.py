"""Serving the dashboard with uvicorn: the only module that imports it.

A stop asked for (SIGTERM, Ctrl-C) is no failure: uvicorn shuts down gracefully (live streams
end, the history is written) and the process leaves with status 0, where uvicorn itself would
raise the signal again and die of it.
"""

from __future__ import annotations

from types import FrameType

import uvicorn

from celeriac.dashboard.auth import Auth
from celeriac.dashboard.routes import create_app
from celeriac.dashboard.runtime import Dashboard


class _Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def serve(dashboard: Dashboard, auth: Auth, loglevel: str = "info") -> bool:
    """Serve until stopped; False when the server could not start (the port is taken)."""
    level = loglevel.lower()
    config = dashboard.config
    server = _Server(
        uvicorn.Config(
            create_app(dashboard, auth),
            host=config.host,
            port=config.port,
            log_level="warning" if level == "warn" else level,
            access_log=level == "debug",
            timeout_graceful_shutdown=3,
            server_header=False,
        )
    )
    server.run()
    return bool(server.started)
