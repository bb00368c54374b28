"""The dashboard's own options, checked once at start: a bad value fails naming the option.

They come from ``celeriac dashboard``'s command line (and ``CELERIAC_DASHBOARD_*`` for the
secrets, :mod:`.auth`): the app's settings are Celery's, and a dashboard option is not one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from celeriac.errors import ImproperlyConfigured

DEFAULT_DB = "celeriac-dashboard.db"


@dataclass(frozen=True)
class DashboardConfig:
    """Where it listens, where its history lives and how much of it is kept."""

    host: str = "127.0.0.1"
    port: int = 5555
    #: The history file (SQLite), created if missing.
    db: Path = field(default_factory=lambda: Path(DEFAULT_DB))
    #: History kept by age (days) and by count (tasks).
    retention_days: float = 7.0
    max_tasks: int = 100_000
    #: Tasks the in-memory state keeps (the history file has the rest).
    max_tasks_in_memory: int = 2000
    #: Seconds between two polls of queue depths and worker details.
    poll_interval: float = 5.0
    #: Seconds between two live updates of a page.
    live_interval: float = 1.0
    #: Queues watched besides the app's own and those the workers consume.
    queues: tuple[str, ...] = ()
    #: Serve ``/metrics`` without a login (for a Prometheus that cannot send a token).
    public_metrics: bool = False
    #: A lost worker's metric series are removed after this many seconds.
    forget_lost_after: float = 600.0
    #: Mark cookies ``Secure`` (behind an HTTPS proxy).
    secure_cookies: bool = False

    def __post_init__(self) -> None:
        checks = (
            ("--port", 0 < self.port < 65536, "a TCP port (1-65535)"),
            ("--retention-days", self.retention_days > 0, "more than 0"),
            ("--max-tasks", self.max_tasks >= 100, "at least 100"),
            ("--max-tasks-in-memory", self.max_tasks_in_memory >= 10, "at least 10"),
            ("--poll-interval", self.poll_interval >= 0.2, "at least 0.2 (seconds)"),
            ("--live-interval", self.live_interval >= 0.2, "at least 0.2 (seconds)"),
        )
        for option, ok, what in checks:
            if not ok:
                raise ImproperlyConfigured(f"dashboard option {option} must be {what}")

    @property
    def max_age(self) -> float:
        return self.retention_days * 86400.0
