"""What inspect commands report, in the shapes Celery's tools read (Flower among them).

* :func:`request_info`: Celery's ``Request.info()`` for a running task, :func:`message_info`
  for one a worker holds and has not started;
* :func:`stats`: ``WorkController.stats()`` with every key Flower reads (``total``, ``pid``,
  ``clock`` as a string, ``uptime``, ``pool``, ``broker``, ``prefetch_count``, ``rusage``, and
  ``autoscaler`` when the worker autoscales);
* :func:`queue_dict`: kombu's ``Queue.as_dict(recurse=True)``.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from celeriac.app.conf_mapping import HIDDEN, MASK
from celeriac.context import Request
from celeriac.errors import DecodeError
from celeriac.protocol.codec import decode_body
from celeriac.routing import Exchange, Queue
from celeriac.transports.base import Delivery

if TYPE_CHECKING:
    from celeriac.worker.worker import Worker

RUSAGE_FIELDS = (
    "utime",
    "stime",
    "maxrss",
    "ixrss",
    "idrss",
    "isrss",
    "minflt",
    "majflt",
    "nswap",
    "inblock",
    "oublock",
    "msgsnd",
    "msgrcv",
    "nsignals",
    "nvcsw",
    "nivcsw",
)


def worker_pid(worker: Worker, task_id: str) -> int:
    """The pid of the process running ``task_id``: its prefork child, else the worker."""
    children = getattr(worker.pool, "_children", None)
    for child in getattr(children, "children", ()) or ():
        job = getattr(child, "job", None)
        if job is not None and job.request.id == task_id:
            return int(child.pid)
    return os.getpid()


def _delivery_info(info: dict[str, Any]) -> dict[str, Any]:
    return {
        "exchange": info.get("exchange", ""),
        "routing_key": info.get("routing_key", info.get("queue")),
        "priority": info.get("priority"),
        "redelivered": bool(info.get("redelivered")),
    }


def request_info(worker: Worker, request: Request, safe: bool | None = False) -> dict[str, Any]:
    """Celery's ``Request.info(safe)`` for a running request (``safe``: args as repr text)."""
    headers = request.headers
    task = worker.app.tasks.get(request.task)
    acks_late = bool(task is not None and task.acks_late)
    return {
        "id": request.id,
        "name": request.task,
        "args": headers.get("argsrepr", repr(request.args)) if safe else list(request.args),
        "kwargs": headers.get("kwargsrepr", repr(request.kwargs)) if safe else request.kwargs,
        "type": request.task,
        "hostname": worker.hostname,
        "time_start": worker.state.active.started.get(request.id),
        "acknowledged": not acks_late,
        "delivery_info": _delivery_info(request.delivery_info),
        "worker_pid": worker_pid(worker, request.id),
    }


def message_info(worker: Worker, delivery: Delivery, safe: bool | None = False) -> dict[str, Any]:
    """The same for a message held and not started (its arguments decoded only if asked)."""
    message = delivery.decode()
    headers = message.headers
    args: Any = headers.get("argsrepr")
    kwargs: Any = headers.get("kwargsrepr")
    if not safe:
        with contextlib.suppress(DecodeError):
            accept = tuple(worker.app.conf.accept_content)
            decoded, named, _ = decode_body(message, accept=accept, codecs=worker.app.codecs)
            args, kwargs = list(decoded), named
    return {
        "id": message.id,
        "name": message.task,
        "args": args,
        "kwargs": kwargs,
        "type": message.task,
        "hostname": worker.hostname,
        "time_start": None,
        "acknowledged": False,
        "delivery_info": _delivery_info(
            {
                "queue": delivery.queue,
                "priority": message.priority,
                "redelivered": delivery.redelivered,
            }
        ),
        "worker_pid": None,
    }


def held_messages(worker: Worker) -> list[Delivery]:
    """Deliveries the worker holds that no pool has started (reserved, in Celery's words)."""
    consumer = worker.consumer
    if consumer is None:
        return []
    running = set(worker.state.active)
    held = []
    for delivery in list(consumer.inflight.values()):
        try:
            if delivery.decode().id not in running:
                held.append(delivery)
        except DecodeError:
            continue
    return held


def masked(options: dict[str, Any]) -> dict[str, Any]:
    return {k: (MASK if HIDDEN.search(str(k)) else v) for k, v in options.items()}


def broker_info(worker: Worker) -> dict[str, Any]:
    """Celery's ``connection.info()``: where the broker is, never its password."""
    url = worker.app.broker_url
    conf = worker.app.conf
    parts = urlsplit(url.split(";")[0])
    scheme = parts.scheme or "memory"
    path = unquote(parts.path.lstrip("/"))
    if scheme.startswith("amqp") or scheme == "pyamqp":
        virtual_host = path or "/"
    elif scheme.startswith("redis") or scheme == "unix":
        virtual_host = path or "0"
    else:
        virtual_host = parts.path or parts.netloc
    try:
        port = parts.port
    except ValueError:
        port = None
    return {
        "hostname": parts.hostname,
        "userid": unquote(parts.username) if parts.username else None,
        "virtual_host": virtual_host,
        "port": port,
        "insist": False,
        "ssl": scheme in ("amqps", "rediss"),
        "transport": {"pyamqp": "amqp", "rediss": "redis", "unix": "redis"}.get(scheme, scheme),
        "connect_timeout": conf.broker_connection_timeout,
        "transport_options": masked(dict(conf.broker_transport_options)),
        "login_method": None,
        "uri_prefix": None,
        "heartbeat": conf.broker_transport_options.get("heartbeat"),
        "failover_strategy": "round-robin",
        "alternates": [],
    }


def pool_info(worker: Worker) -> dict[str, Any]:
    pool = worker.pool
    options = worker.pool_options
    child_pids = getattr(pool, "child_pids", None)
    processes = child_pids() if callable(child_pids) else [os.getpid()]
    return {
        "implementation": f"{type(pool).__module__}:{type(pool).__name__}",
        "max-concurrency": pool.concurrency if pool is not None else worker.concurrency,
        "processes": processes,
        "max-tasks-per-child": options.max_tasks_per_child or "N/A",
        "put-guarded-by-semaphore": False,
        "timeouts": [options.soft_time_limit or 0, options.time_limit or 0],
    }


def rusage() -> dict[str, Any] | str:
    try:
        usage = resource.getrusage(resource.RUSAGE_SELF)
    except (OSError, ValueError):
        return "N/A"
    return {name: getattr(usage, f"ru_{name}") for name in RUSAGE_FIELDS}


def stats(worker: Worker, clock: Any) -> dict[str, Any]:
    """Celery's ``stats`` reply."""
    consumer = worker.consumer
    reply: dict[str, Any] = {
        "total": dict(worker.state.active.total),
        "pid": os.getpid(),
        "clock": str(clock.value),
        "uptime": int(time.monotonic() - worker.state.started),
        "pool": pool_info(worker),
        "broker": broker_info(worker),
        "prefetch_count": consumer.window if consumer is not None else 0,
        "rusage": rusage(),
    }
    if worker.autoscale is not None:
        maximum, minimum = worker.autoscale
        current = worker.pool.concurrency if worker.pool is not None else worker.concurrency
        reply["autoscaler"] = {
            "max": maximum,
            "min": minimum,
            "current": current,
            "qty": len(held_messages(worker)),
        }
    return reply


def exchange_dict(exchange: Exchange | None) -> dict[str, Any]:
    return {
        "name": exchange.name if exchange is not None else "",
        "type": exchange.type if exchange is not None else "direct",
        "arguments": None,
        "durable": exchange.durable if exchange is not None else True,
        "passive": False,
        "auto_delete": False,
        "delivery_mode": None,
        "no_declare": False,
    }


def queue_dict(queue: Queue) -> dict[str, Any]:
    """kombu's ``Queue.as_dict(recurse=True)`` for a celeriac queue."""
    arguments = dict(queue.arguments)
    return {
        "name": queue.name,
        "exchange": exchange_dict(queue.exchange),
        "routing_key": queue.routing_key if queue.routing_key is not None else queue.name,
        "queue_arguments": arguments or None,
        "binding_arguments": dict(queue.binding_arguments) or None,
        "consumer_arguments": None,
        "durable": queue.durable,
        "exclusive": bool(queue.exclusive),
        "auto_delete": queue.auto_delete,
        "no_ack": False,
        "alias": queue.alias,
        "bindings": [
            {
                "exchange": binding.exchange,
                "routing_key": binding.routing_key,
                "arguments": dict(binding.arguments) or None,
            }
            for binding in queue.bindings
        ],
        "no_declare": queue.no_declare,
        "expires": _seconds(arguments.get("x-expires")),
        "message_ttl": _seconds(arguments.get("x-message-ttl")),
        "max_length": arguments.get("x-max-length"),
        "max_length_bytes": arguments.get("x-max-length-bytes"),
        "max_priority": queue.max_priority,
    }


def _seconds(milliseconds: Any) -> float | None:
    return float(milliseconds) / 1000 if isinstance(milliseconds, int | float) else None
