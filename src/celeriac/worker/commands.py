"""The commands a worker's mailbox answers: the inspect commands here, the control commands in
:mod:`celeriac.worker.commands_control`. Names, arguments and replies are Celery's
(:mod:`celeriac.control.meta` lists them); every command is a coroutine taking the worker and
the request's arguments, run on the worker's event loop.

A command must not block the loop (the loop fetches, settles and answers ``ping`` for every
pool): what waits on I/O is awaited, what blocks runs in a thread.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from celeriac.control.pidbox import Clock
from celeriac.worker import commands_info as info

if TYPE_CHECKING:
    from celeriac.worker.worker import Worker

Handler = Callable[["Worker", dict[str, Any], "Context"], Awaitable[Any]]

#: Command name -> implementation; filled by :func:`command` here and in ``commands_control``
#: (the mailbox imports both).
HANDLERS: dict[str, Handler] = {}
#: A command that returns this sends no reply (the worker leaves before it could).
NO_REPLY = object()
DEFAULT_TASK_INFO_ITEMS = ("exchange", "routing_key", "rate_limit")


class Context:
    """What the mailbox gives each command beside the worker: its clock, and what to do once
    the reply is sent (``shutdown`` stops the worker then, not before)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.after_reply: list[Callable[[], Any]] = []


def ok(value: Any) -> dict[str, Any]:
    return {"ok": value}


def nok(value: Any) -> dict[str, Any]:
    return {"error": value}


def command(*names: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for name in names:
            HANDLERS[name] = fn
        return fn

    return register


@command("ping")
async def ping(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    return ok("pong")


@command("clock")
async def clock(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    return {"clock": ctx.clock.value}


@command("stats")
async def stats(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    return info.stats(worker, ctx.clock)


@command("active", "dump_active")
async def active(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    safe = arguments.get("safe")
    return [info.request_info(worker, r, safe) for r in list(worker.state.active.values())]


@command("reserved", "dump_reserved")
async def reserved(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    safe = arguments.get("safe")
    return [info.message_info(worker, d, safe) for d in info.held_messages(worker)]


@command("scheduled", "dump_schedule")
async def scheduled(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    """Always empty: an ETA or countdown task waits on the broker, not in a worker."""
    return []


@command("revoked", "dump_revoked")
async def revoked(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    return worker.state.revoked.ids()


@command("registered", "dump_tasks")
async def registered(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    items = arguments.get("taskinfoitems") or DEFAULT_TASK_INFO_ITEMS
    items = [i for i in items if isinstance(i, str) and not i.startswith("_")]
    builtins = bool(arguments.get("builtins"))
    tasks = worker.app.tasks
    names = sorted(n for n in tasks if builtins or not n.startswith(("celery.", "celeriac.")))
    listed = []
    for name in names:
        task = tasks[name]
        fields = {}
        for item in items:
            value = task.options.get(item, getattr(task, item, None))
            if value is not None and not callable(value):
                fields[item] = str(value)
        if fields:
            listed.append(f"{name} [{' '.join(f'{k}={v}' for k, v in fields.items())}]")
        else:
            listed.append(name)
    return listed


@command("active_queues")
async def active_queues(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    return [info.queue_dict(queue) for queue in worker.queues]


@command("conf", "dump_conf")
async def conf(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    table = worker.app.conf.table(with_defaults=bool(arguments.get("with_defaults")))
    return {k: v for k, v in table.items() if isinstance(k, str) and not k.startswith("__")}


@command("query_task")
async def query_task(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    wanted = arguments.get("ids") or []
    ids = {wanted} if isinstance(wanted, str) else {str(i) for i in wanted}
    found: dict[str, Any] = {}
    for task_id, request in list(worker.state.active.items()):
        if task_id in ids:
            found[task_id] = ["active", info.request_info(worker, request)]
    for delivery in info.held_messages(worker):
        task_id = delivery.decode().id
        if task_id in ids and task_id not in found:
            found[task_id] = ["reserved", info.message_info(worker, delivery)]
    return found


@command("hello")
async def hello(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    """Celery's mingle: a starting Celery worker shares its revokes and asks for ours."""
    from_node = arguments.get("from_node")
    if from_node == worker.hostname:
        return None
    theirs = arguments.get("revoked") or ()
    for task_id in theirs:  # a list of ids (Celery 5.7) or a dict keyed by id (5.6)
        worker.state.revoked.add(str(task_id))
    return {"revoked": worker.state.revoked.ids(), "clock": ctx.clock.forward()}


@command("report")
async def report(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    from celeriac.utils.urls import redact_url

    lines = [
        f"node: {worker.hostname} (pid {os.getpid()})",
        f"python: {sys.version.split()[0]} ({platform.platform()})",
        f"pool: {worker.pool_name} x {worker.concurrency}",
        f"broker: {redact_url(worker.app.broker_url)}",
    ]
    return ok("\n".join(lines))


@command("memsample", "memdump", "objgraph")
async def not_provided(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    return nok("not provided by celeriac workers (memory debugging is Celery's own)")
