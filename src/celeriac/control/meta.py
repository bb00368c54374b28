"""The remote-control commands workers answer: their names, kinds and arguments, in one table.

Celery keeps this table beside the worker's implementations (``Panel.meta``) and its command line
reads it there; here it sits below both, so that ``celeriac inspect``/``celeriac control`` check
a command and turn its positional arguments into the request's without importing the worker,
and the worker's mailbox (:mod:`celeriac.worker.commands`) implements exactly these names (a
test holds the two together). Names, argument names and order are Celery's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["inspect", "control"]


def to_bool(text: Any) -> bool:
    """Celery's ``strtobool`` for command-line arguments."""
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "y", "on"):
        return True
    if value in ("0", "false", "no", "n", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


@dataclass(frozen=True, slots=True)
class CommandInfo:
    """One command: ``args`` are its positional arguments on the command line, in order, with
    the type each is converted to; ``variadic`` takes every argument left, as a list."""

    name: str
    kind: Kind
    help: str
    args: tuple[tuple[str, Callable[[Any], Any]], ...] = ()
    variadic: str | None = None
    signature: str = ""
    #: Shown by ``--list`` (``hello`` and ``election`` are for workers among themselves).
    visible: bool = True
    #: How many of ``args`` must be given (those written ``<name>`` in the signature).
    required: int = 0


def _info(name: str, kind: Kind, help: str, **more: Any) -> tuple[str, CommandInfo]:
    return name, CommandInfo(name, kind, help, **more)


COMMANDS: dict[str, CommandInfo] = dict(
    [
        # -- inspect ------------------------------------------------------------------------------
        _info("ping", "inspect", "Ping worker(s)."),
        _info("stats", "inspect", "Request worker statistics/information."),
        _info("active", "inspect", "List of tasks currently being executed."),
        _info("reserved", "inspect", "List of currently reserved tasks, not including active."),
        _info(
            "scheduled",
            "inspect",
            "List of currently scheduled ETA/countdown tasks (none: they wait on the broker).",
        ),
        _info(
            "registered",
            "inspect",
            "List of registered tasks.",
            variadic="taskinfoitems",
            signature="[attr1 [attr2 [... [attrN]]]]",
        ),
        _info(
            "active_queues", "inspect", "List the task queues a worker is currently consuming from."
        ),
        _info("revoked", "inspect", "List of revoked task-ids."),
        _info(
            "conf",
            "inspect",
            "List configuration (secrets masked).",
            args=(("with_defaults", to_bool),),
            signature="[include_defaults=False]",
        ),
        _info(
            "query_task",
            "inspect",
            "Query for task information by id.",
            variadic="ids",
            signature="[id1 [id2 [... [idN]]]]",
        ),
        _info("clock", "inspect", "Get current logical clock value."),
        _info("report", "inspect", "Information about the worker, for bug reports."),
        _info("hello", "inspect", "Request mingle sync-data.", visible=False),
        # -- control ------------------------------------------------------------------------------
        _info(
            "revoke",
            "control",
            "Revoke task by task id (or list of ids).",
            variadic="task_id",
            signature="[id1 [id2 [... [idN]]]]",
        ),
        _info(
            "terminate",
            "control",
            "Terminate task by task id (or list of ids).",
            args=(("signal", str),),
            required=1,
            variadic="task_id",
            signature="<signal> [id1 [id2 [... [idN]]]]",
        ),
        _info(
            "rate_limit",
            "control",
            "Tell worker(s) to modify the rate limit for a task by type.",
            args=(("task_name", str), ("rate_limit", str)),
            required=2,
            signature="<task_name> <rate_limit (e.g., 5/s | 5/m | 5/h)>",
        ),
        _info(
            "time_limit",
            "control",
            "Tell worker(s) to modify the time limit for task by type.",
            args=(("task_name", str), ("soft", float), ("hard", float)),
            required=2,
            signature="<task_name> <soft_secs> [hard_secs]",
        ),
        _info(
            "pool_grow",
            "control",
            "Grow pool by n processes/threads.",
            args=(("n", int),),
            signature="[N=1]",
        ),
        _info(
            "pool_shrink",
            "control",
            "Shrink pool by n processes/threads.",
            args=(("n", int),),
            signature="[N=1]",
        ),
        _info(
            "autoscale",
            "control",
            "Modify autoscale settings.",
            args=(("max", int), ("min", int)),
            signature="[max [min]]",
        ),
        _info(
            "add_consumer",
            "control",
            "Tell worker(s) to consume from task queue by name.",
            args=(("queue", str), ("exchange", str), ("exchange_type", str), ("routing_key", str)),
            required=1,
            signature="<queue> [exchange [type [routing_key]]]",
        ),
        _info(
            "cancel_consumer",
            "control",
            "Tell worker(s) to stop consuming from task queue by name.",
            args=(("queue", str),),
            required=1,
            signature="<queue>",
        ),
        _info("enable_events", "control", "Tell worker(s) to send task-related events."),
        _info("disable_events", "control", "Tell worker(s) to stop sending task-related events."),
        _info("heartbeat", "control", "Tell worker(s) to send event heartbeat immediately."),
        _info("shutdown", "control", "Shutdown worker(s)."),
        _info("pool_restart", "control", "Restart execution pool (not supported)."),
        _info("election", "control", "Hold election.", visible=False),
    ]
)

#: Celery's older names, still accepted by workers.
ALIASES: dict[str, str] = {
    "dump_conf": "conf",
    "dump_active": "active",
    "dump_reserved": "reserved",
    "dump_schedule": "scheduled",
    "dump_revoked": "revoked",
    "dump_tasks": "registered",
}


def of_kind(kind: Kind) -> dict[str, CommandInfo]:
    """The visible commands of ``kind``, by name, sorted."""
    return {n: c for n, c in sorted(COMMANDS.items()) if c.kind == kind and c.visible}


def compile_arguments(info: CommandInfo, args: list[str]) -> dict[str, Any]:
    """Celery's rule: positional ``args`` fill the command's arguments in order, each
    converted; the rest go to its variadic argument. ValueError when there are too many or one
    does not convert."""
    arguments: dict[str, Any] = {}
    rest = list(args)
    if len(rest) < info.required:
        raise ValueError(f"command {info.name!r} takes arguments: {info.signature}")
    for name, convert in info.args:
        if not rest:
            break
        text = rest.pop(0)
        try:
            arguments[name] = convert(text)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{info.name}: argument {name}: {exc}") from None
    if info.variadic:
        arguments[info.variadic] = rest
    elif rest:
        raise ValueError(f"command {info.name!r} takes arguments: {info.signature or 'none'}")
    return arguments
