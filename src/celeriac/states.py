"""Task states, with Celery's names and meaning.

PENDING (unknown or waiting) -> RECEIVED (a worker holds it) -> STARTED (running, only with
``track_started``) -> one of SUCCESS, FAILURE, REVOKED, REJECTED (ready), or RETRY (it will run
again, so not ready).
"""

from __future__ import annotations

PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
RETRY = "RETRY"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"
REJECTED = "REJECTED"
#: Celery's state for a run that raised ``Ignore``: never stored (nothing is recorded for it).
IGNORED = "IGNORED"

ALL_STATES = frozenset({PENDING, RECEIVED, STARTED, RETRY, SUCCESS, FAILURE, REVOKED, REJECTED})
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED, REJECTED})
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, RETRY})
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED, REJECTED})
PROPAGATE_STATES = frozenset({FAILURE, REVOKED, REJECTED})
