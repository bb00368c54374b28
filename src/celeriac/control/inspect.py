"""``app.control.inspect()``: Celery's read-only commands, each reply merged by node.

``app.control.inspect(destination=["w1@h"], timeout=2).active()`` asks the workers and returns
``{"w1@h": [...]}``, or ``None`` when nobody answered within the timeout, as Celery does. With
a single node name (a string) as ``destination``, the reply is that node's alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celeriac.control.pidbox import match

if TYPE_CHECKING:
    from celeriac.app.base import Celeriac
    from celeriac.control.calls import ReplyCallback

logger = logging.getLogger("celeriac.control")


def flatten_reply(replies: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``[{node: reply}, ...]`` into ``{node: reply}``; a node name heard twice is two workers
    named alike (give each its own ``-n``), which is logged."""
    nodes: dict[str, Any] = {}
    twice: set[str] = set()
    for item in replies:
        twice.update(name for name in item if name in nodes)
        nodes.update(item)
    if twice:
        logger.warning(
            "replies from more than one worker named %s: give each worker its own -n name",
            ", ".join(sorted(twice)),
        )
    return nodes


class Inspect:
    """Celery's ``Inspect``: built by :meth:`celeriac.control.Control.inspect`."""

    def __init__(
        self,
        destination: str | Sequence[str] | None = None,
        timeout: float = 1.0,
        callback: ReplyCallback | None = None,
        connection: Any = None,
        app: Celeriac | None = None,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> None:
        if app is None:
            raise TypeError("Inspect needs its app: use app.control.inspect(...)")
        self.app = app
        self.destination = destination
        self.timeout = timeout
        self.callback = callback
        self.connection = connection
        self.limit = limit
        self.pattern = pattern
        self.matcher = matcher

    def _prepare(self, replies: list[dict[str, Any]] | None) -> Any:
        if not replies:
            return None
        by_node = flatten_reply(replies)
        if isinstance(self.destination, str):
            return by_node.get(self.destination)
        if self.pattern:
            return {n: r for n, r in by_node.items() if match(n, self.pattern, self.matcher)}
        return by_node

    def _request(self, command: str, **kwargs: Any) -> Any:
        destination = self.destination
        if isinstance(destination, str):
            destination = [destination]
        return self._prepare(
            self.app.control.broadcast(
                command,
                arguments=kwargs,
                destination=destination,
                callback=self.callback,
                limit=self.limit,
                timeout=self.timeout,
                reply=True,
                pattern=self.pattern,
                matcher=self.matcher,
            )
        )

    def ping(self, destination: Any = None) -> Any:
        """``{node: {"ok": "pong"}}`` from every worker that answered."""
        return self._request("ping")

    def active(self, safe: bool | None = None) -> Any:
        """The tasks each worker runs now (``safe``: arguments as their repr)."""
        return self._request("active", safe=safe)

    def reserved(self, safe: bool | None = None) -> Any:
        """The tasks each worker holds and has not started."""
        return self._request("reserved")

    def scheduled(self, safe: bool | None = None) -> Any:
        """ETA and countdown tasks a worker holds (always none in celeriac: they wait on the
        broker, not in a worker)."""
        return self._request("scheduled")

    def revoked(self) -> Any:
        return self._request("revoked")

    def registered(self, *taskinfoitems: str) -> Any:
        """The task names each worker knows, with ``taskinfoitems`` attributes when set."""
        return self._request("registered", taskinfoitems=taskinfoitems)

    registered_tasks = registered

    def stats(self) -> Any:
        return self._request("stats")

    def active_queues(self) -> Any:
        return self._request("active_queues")

    def query_task(self, *ids: Any) -> Any:
        """``{node: {task id: [state, info]}}`` for the ids a worker holds or runs."""
        if len(ids) == 1 and isinstance(ids[0], list | tuple):
            ids = tuple(ids[0])
        return self._request("query_task", ids=list(ids))

    def conf(self, with_defaults: bool = False) -> Any:
        """Each worker's settings (those changed from the defaults unless ``with_defaults``),
        secrets masked."""
        return self._request("conf", with_defaults=with_defaults)

    def clock(self) -> Any:
        return self._request("clock")

    def report(self) -> Any:
        return self._request("report")

    def hello(self, from_node: str, revoked: Any = None) -> Any:
        return self._request("hello", from_node=from_node, revoked=revoked)

    def memsample(self) -> Any:
        return self._request("memsample")

    def memdump(self, samples: int = 10) -> Any:
        return self._request("memdump", samples=samples)

    def objgraph(self, type: str = "Request", n: int = 200, max_depth: int = 10) -> Any:
        return self._request("objgraph", num=n, max_depth=max_depth, type=type)
