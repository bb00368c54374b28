"""The control commands a worker answers (the inspect ones are in :mod:`.commands`).

Replies are Celery's: ``{"ok": text}`` or ``{"error": text}``, with Celery's texts where a tool
may read them. A command this worker cannot carry out answers an error that says why (the solo
pool cannot grow; a thread cannot be stopped from outside, so ``revoke --terminate`` of a task
running in a thread answers so, though the revoke itself holds).
"""

from __future__ import annotations

import asyncio
import logging
import signal as signals_module
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.control.revokes import BY, revokes_for
from celeriac.errors import ImproperlyConfigured, TaskRevokedError
from celeriac.results.base import ResultMeta, exception_to_dict
from celeriac.routing import Exchange, Queue
from celeriac.routing.entities import ExchangeType
from celeriac.utils.rates import parse_rate
from celeriac.worker.commands import Context, command, nok, ok
from celeriac.worker.commands_info import held_messages
from celeriac.worker.events_step import events_step

if TYPE_CHECKING:
    from celeriac.worker.worker import Worker

logger = logging.getLogger("celeriac.worker")
EXCHANGE_TYPES: tuple[ExchangeType, ...] = ("direct", "topic", "fanout", "headers")


# -- revoke -----------------------------------------------------------------------------------
def _task_ids(arguments: dict[str, Any]) -> list[str]:
    """``task_id`` (Celery's) or ``task_ids``: one id or a list of them."""
    given = arguments.get("task_id", arguments.get("task_ids")) or []
    return [given] if isinstance(given, str) else [str(i) for i in given]


def _set_text(ids: list[str]) -> str:
    """Python's set repr, as Celery's reply text carries it."""
    return "{" + ", ".join(repr(i) for i in ids) + "}"


def _signum(name: Any) -> int | None:
    """A signal by name (``SIGKILL``, ``KILL``) or number; None when there is no such one."""
    if name is None or name == "":
        return int(signals_module.SIGTERM)
    if isinstance(name, int) and not isinstance(name, bool):
        return name if name in {int(s) for s in signals_module.Signals} else None
    text = str(name).upper()
    text = text if text.startswith("SIG") else f"SIG{text}"
    found = getattr(signals_module.Signals, text, None)
    return int(found) if found is not None else None


def _members(worker: Worker, by: str, ids: set[str]) -> list[str]:
    """The ids of the tasks this worker runs or holds whose ``by`` (root or parent) is one of
    ``ids``."""
    found = [
        request.id for request in list(worker.state.active.values()) if getattr(request, by) in ids
    ]
    for delivery in held_messages(worker):
        headers = delivery.decode().headers
        if headers.get(by) in ids:
            found.append(str(headers.get("id")))
    return found


@command("revoke")
async def revoke(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    ids = _task_ids(arguments)
    by = str(arguments.get("by") or "id")
    if by not in BY:
        return nok(f"revoke by {by!r}: choose one of {', '.join(BY)}")
    terminate = bool(arguments.get("terminate"))
    signum = _signum(arguments.get("signal"))
    if terminate and signum is None:
        return nok(f"unknown signal {arguments.get('signal')!r}")
    revoked = worker.state.revoked
    for value in ids:
        revoked.add(value, by)
    if not arguments.get("persisted"):
        await _persist(worker, ids, by)
    targets = ids if by == "id" else _members(worker, by, set(ids))
    for task_id in targets:
        revoked.add(task_id)  # held ones are caught by every later check, in every pool
    active = worker.state.active
    if by == "id":
        waiting = [i for i in ids if i not in active]
        if waiting:
            await asyncio.to_thread(_store_revoked, worker, waiting)
    what = _set_text(ids) if by == "id" else f"of {by} {_set_text(ids)}"
    logger.info("revoked %s%s", ", ".join(ids), f" (the tasks of that {by})" if by != "id" else "")
    if not terminate:
        return ok(f"tasks {what} flagged as revoked")
    running = [i for i in targets if i in active]
    if not running or worker.pool is None:
        return ok("terminate: tasks unknown")
    stopped: list[str] = []
    refused: list[str] = []
    for task_id in running:
        (stopped if await worker.pool.terminate(task_id) else refused).append(task_id)
    if refused:
        done = f"; terminated: {', '.join(stopped)}" if stopped else ""
        return nok(
            f"terminate: the {worker.pool_name} pool cannot stop a task running in a thread "
            f"({', '.join(refused)}): they stay flagged as revoked and run to their end{done}"
        )
    return ok(f"terminate: {', '.join(stopped)}")


@command("terminate")
async def terminate(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    return await revoke(worker, {**arguments, "terminate": True}, ctx)


async def _persist(worker: Worker, ids: list[str], by: str) -> None:
    """Keep a revoke that came from a client that did not (Celery's, Flower) on the broker."""
    store = worker.state.revoke_store
    if store is None:
        return
    try:
        await store.add(revokes_for(ids, by, worker.state.revoked.expires))  # type: ignore[arg-type]
    except Exception as exc:
        logger.warning("revoke of %s: not kept on the broker: %s", ", ".join(ids), exc)


def _store_revoked(worker: Worker, task_ids: list[str]) -> None:
    """REVOKED is stored when the revoke arrives (as Celery 5.6+ does), for the tasks not
    running here and not finished: ``AsyncResult.state`` says REVOKED at once, even for a task
    whose message waits for its countdown. A running task gets its state when it stops."""
    backend = worker.app.backend
    if backend is None:
        return
    for task_id in task_ids:
        try:
            if backend.get_meta(task_id).ready:
                continue  # finished already (or revoked by another worker)
            error = TaskRevokedError("revoked")
            backend.store(ResultMeta(task_id, states.REVOKED, exception_to_dict(error)))
        except Exception as exc:  # the revoke itself holds: the message is not run
            logger.warning("revoke of %s: its REVOKED state was not stored: %s", task_id, exc)


# -- limits -----------------------------------------------------------------------------------
@command("rate_limit")
async def rate_limit(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    """Celery's ``rate_limit(task_name, rate_limit)``; ``None``, ``0`` or ``"0"`` removes it."""
    name = str(arguments.get("task_name"))
    rate = arguments["rate_limit"] if "rate_limit" in arguments else arguments.get("rate")
    text = None if rate is None or rate in (0, "0", "") else str(rate)
    try:
        parse_rate(text)
    except ImproperlyConfigured as exc:
        return nok(f"Invalid rate limit string: {exc}")
    task = worker.app.tasks.get(name)
    if task is None or worker.consumer is None:
        logger.warning("rate_limit: unknown task %r (this worker has no such task)", name)
        return nok("unknown task")
    task.options["rate_limit"] = text
    worker.consumer.set_rate_limit(name, text)
    if text is None:
        logger.info("rate limits disabled for tasks of type %s", name)
        return ok("rate limit disabled successfully")
    logger.info("rate limit of %s set to %s", name, text)
    return ok("new rate limit set successfully")


@command("time_limit")
async def time_limit(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    name = str(arguments.get("task_name"))
    task = worker.app.tasks.get(name)
    if task is None:
        return nok("unknown task")
    try:
        hard = _seconds(arguments.get("hard"))
        soft = _seconds(arguments.get("soft"))
    except ValueError as exc:
        return nok(str(exc))
    task.options["time_limit"] = hard
    task.options["soft_time_limit"] = soft
    logger.info("new time limits for tasks of type %s: soft=%s hard=%s", name, soft, hard)
    return ok("time limits set successfully")


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not a number of seconds: {value!r}")
    seconds = float(value)
    if seconds < 0:
        raise ValueError(f"a time limit cannot be negative: {value!r}")
    return seconds or None


# -- the pool ---------------------------------------------------------------------------------
def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{name} must be a whole number, not {value!r}")
    return int(value)


async def _resize(worker: Worker, arguments: dict[str, Any], grow: bool) -> Any:
    verb = "grow" if grow else "shrink"
    if worker.autoscale is not None:
        return nok(f"pool_{verb} is not supported with autoscale. Adjust autoscale range instead.")
    pool, consumer = worker.pool, worker.consumer
    if pool is None or consumer is None:
        return nok("the worker is not running its pool yet")
    if pool.name == "solo":
        return nok(f"the solo pool runs one task at a time: it cannot {verb}")
    try:
        n = _count(arguments.get("n", 1), "n")
    except ValueError as exc:
        return nok(str(exc))
    if n < 1:
        return nok(f"n must be at least 1, not {n}")
    size = pool.concurrency + n if grow else pool.concurrency - n
    if size < 1:
        return nok(f"the pool has {pool.concurrency}: it cannot shrink by {n}")
    await pool.resize(size)
    await consumer.resize(size)
    worker.concurrency = size
    logger.info("pool %s to %d by remote control", "grown" if grow else "shrunk", size)
    return ok(f"pool will {verb}")


@command("pool_grow")
async def pool_grow(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    return await _resize(worker, arguments, grow=True)


@command("pool_shrink")
async def pool_shrink(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    return await _resize(worker, arguments, grow=False)


@command("autoscale")
async def autoscale(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    if worker.autoscale is None:
        return nok("autoscale is not enabled on this worker (start it with --autoscale MAX,MIN)")
    maximum, minimum = worker.autoscale
    try:
        if arguments.get("max") is not None:
            maximum = _count(arguments["max"], "max")
        if arguments.get("min") is not None:
            minimum = _count(arguments["min"], "min")
    except ValueError as exc:
        return nok(str(exc))
    if maximum < 1 or minimum < 0 or minimum > maximum:
        return nok(f"autoscale takes max >= min >= 0 and max >= 1, not max={maximum} min={minimum}")
    worker.autoscale = (maximum, max(1, minimum))
    logger.info("autoscale now max=%d min=%d", maximum, minimum)
    return ok(f"autoscale now max={maximum} min={minimum}")


@command("pool_restart")
async def pool_restart(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    return nok(
        "pool_restart is not supported: restart the worker (celeriac multi restart), "
        "or run it with --reload while developing"
    )


# -- queues -----------------------------------------------------------------------------------
@command("add_consumer")
async def add_consumer(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    name = arguments.get("queue")
    consumer, transport = worker.consumer, worker.transport
    if not isinstance(name, str) or not name:
        return nok("add_consumer needs a queue name")
    if consumer is None or transport is None:
        return nok("the worker is not consuming yet")
    if name in consumer.queue_names:
        return ok(f"already consuming from {name}")
    try:
        queue = _queue_for(worker, name, arguments)
        await transport.declare_queue(queue)
    except Exception as exc:
        return nok(f"cannot declare queue {name!r}: {exc}")
    worker.queues.append(queue)
    consumer.queue_names.append(queue.name)
    await consumer.refetch()  # the fetch waiting now does not name it: start it over
    logger.info("consuming from %s by remote control", name)
    return ok(f"add consumer {name}")


def _queue_for(worker: Worker, name: str, arguments: dict[str, Any]) -> Queue:
    """The queue the app declares under ``name``, else Celery's default for an unknown one: a
    direct exchange of the same name (or the one given), bound by the routing key given."""
    exchange, kind = arguments.get("exchange"), arguments.get("exchange_type") or "direct"
    key = arguments.get("routing_key")
    if kind not in EXCHANGE_TYPES:
        raise ValueError(f"exchange type {kind!r}: choose one of {', '.join(EXCHANGE_TYPES)}")
    if exchange is None and key is None:
        for queue in worker.app.router.queues:
            if name in (queue.name, queue.alias):
                return queue
    return Queue(name, exchange=Exchange(str(exchange or name), kind), routing_key=key or name)


@command("cancel_consumer")
async def cancel_consumer(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    """Stop consuming a queue at once: it leaves the consumer's list, the fetch waiting now is
    started over without it, and the transport gives back what it took from it ahead of the
    worker (RabbitMQ's pushed messages; a cancelled claim's haul). Once the reply is sent, what
    is sent to the queue waits on the broker. What the worker holds already (fetched, waiting
    for a pool slot) still runs, as in Celery."""
    name = arguments.get("queue")
    consumer, transport = worker.consumer, worker.transport
    if consumer is None or transport is None:
        return nok("the worker is not consuming yet")
    if not isinstance(name, str) or name not in consumer.queue_names:
        return ok(f"no longer consuming from {name}")
    if len(consumer.queue_names) == 1:
        return nok(f"{name} is the only queue this worker consumes: add another first")
    consumer.queue_names.remove(name)
    worker.queues[:] = [q for q in worker.queues if q.name != name]
    await consumer.refetch()
    try:
        await transport.stop_consuming(name)
    except Exception as exc:
        logger.warning("cancel_consumer %s: the broker's consumer was not stopped: %s", name, exc)
        return nok(f"no longer fetching from {name}, but the broker was not told: {exc}")
    logger.info("no longer consuming from %s (remote control)", name)
    return ok(f"no longer consuming from {name}")


# -- events -----------------------------------------------------------------------------------
@command("enable_events")
async def enable_events(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    step = events_step(worker)
    if step is None or step.dispatcher is None:
        return nok("event dispatcher unavailable")
    if step.task_events:
        return ok("task events already enabled")
    step.enable()
    return ok("task events enabled")


@command("disable_events")
async def disable_events(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    step = events_step(worker)
    if step is None or step.dispatcher is None:
        return nok("event dispatcher unavailable")
    if not step.task_events:
        return ok("task events already disabled")
    step.disable()
    return ok("task events disabled")


@command("heartbeat")
async def heartbeat(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    step = events_step(worker)
    if step is not None:
        step.heartbeat()
    return None


@command("election")
async def election(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    """Celery's gossip elections: celeriac workers take no part (no gossip)."""
    return None


# -- the worker -------------------------------------------------------------------------------
@command("shutdown")
async def shutdown(worker: Worker, arguments: dict[str, Any], ctx: Context) -> Any:
    """Stop warm, once the reply is sent (Celery's worker leaves without a reply)."""
    logger.warning("%s", arguments.get("msg") or "Got shutdown from remote")
    ctx.after_reply.append(worker.request_stop)
    return ok("shutting down")
