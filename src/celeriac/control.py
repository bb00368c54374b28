"""Remote control, the sending side: ``app.control.revoke(task_id, terminate=True)``.

Commands are broadcast on the fanout exchange ``celeriac.control``; every worker has its own
auto-deleted queue bound to it (:mod:`celeriac.worker.control`) and applies the commands whose
``destination`` includes it (or all, when there is none). A worker that is down when a revoke
is sent does not hear it, as in Celery without a state database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from celeriac.protocol.message import Message, new_id
from celeriac.routing import Exchange
from celeriac.transports.base import Outgoing

if TYPE_CHECKING:
    from celeriac.app import Celeriac

CONTROL_EXCHANGE = Exchange("celeriac.control", "fanout", durable=False)
CONTROL_TASK = "celeriac.control"


def control_message(
    command: str, arguments: dict[str, Any], destination: Sequence[str] | None
) -> Message:
    body = orjson.dumps(
        {"arguments": arguments, "destination": list(destination) if destination else None}
    )
    return Message(
        headers={"task": CONTROL_TASK, "id": new_id(), "command": command},
        body=body,
        content_type="application/json",
    )


class Control:
    """Broadcast commands to workers. Reached as ``app.control``."""

    def __init__(self, app: Celeriac) -> None:
        self.app = app

    def broadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        destination: Sequence[str] | None = None,
    ) -> None:
        """Send ``command`` to every worker (or only to the hostnames in ``destination``)."""
        message = control_message(command, arguments or {}, destination)
        item = Outgoing(message, CONTROL_EXCHANGE.name, "")
        self.app.producer.send([item], exchanges=[CONTROL_EXCHANGE])

    def revoke(
        self,
        task_id: str | Sequence[str],
        destination: Sequence[str] | None = None,
        terminate: bool = False,
        signal: str | int = "SIGTERM",
        **kwargs: Any,
    ) -> None:
        """Do not run these tasks; with ``terminate``, also stop them if they are running (a
        prefork child gets ``signal``). Celery's argument order: ``destination`` second."""
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        arguments = {"task_ids": ids, "terminate": terminate, "signal": signal, **kwargs}
        self.broadcast("revoke", arguments, destination)

    def rate_limit(
        self,
        task_name: str,
        rate_limit: str | float | None,
        destination: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Change a task type's rate limit (``"10/s"``; ``None`` removes it) on workers now,
        with Celery's argument names."""
        arguments = {"task_name": task_name, "rate_limit": rate_limit, **kwargs}
        self.broadcast("rate_limit", arguments, destination)
