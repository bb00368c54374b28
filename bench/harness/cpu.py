"""CPU per task, read from outside the systems measured, so that a change can be judged on a
noisy machine (a busy neighbour slows the wall rates, not the CPU a task costs).

Three meters, none of which asks the system measured about itself:

* the worker: its whole process tree from /proc (:func:`procs.cpu_seconds`: every process,
  prefork children included, plus the time of children already reaped), in 10 ms ticks;
* Redis: its own ``INFO cpu`` counters (user + system of the server, microseconds);
* RabbitMQ: its Erlang VM (``beam.smp``) from /proc, in ticks. Its schedulers spin a little
  before sleeping, so an idle RabbitMQ shows some CPU too; every AMQP row pays the same.

The producer's CPU comes from the adapter itself (``producer_cpu_s``: ``time.process_time`` over
the timed section only, see ``systems/common.py``), since it is a short-lived process of its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from harness import procs


@dataclass(frozen=True)
class Sample:
    """Cumulative CPU seconds at one instant: the worker tree's (None when no worker runs),
    Redis' and RabbitMQ's (None when it does not run here)."""

    worker: float | None
    redis: float
    rabbitmq: float | None


def rabbitmq_pid() -> int | None:
    """The RabbitMQ node's Erlang VM on this machine, if any."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
            if comm != "beam.smp":
                continue
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if b"rabbit" in cmdline:
            return int(entry)
    return None


def redis_cpu_seconds(client: redis.Redis) -> float:
    info: dict[str, Any] = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def process_cpu_seconds(pid: int) -> float | None:
    """User + system time of one process (not its children), or None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / procs.CLOCK_TICKS


class Meter:
    """Takes :class:`Sample` s for one workload of one system."""

    def __init__(self, client: redis.Redis, broker: str, worker_pid: int | None = None) -> None:
        self.client = client
        self.broker = broker
        self.worker_pid = worker_pid
        self.rabbit = rabbitmq_pid() if broker == "amqp" else None

    def sample(self) -> Sample:
        worker = None if self.worker_pid is None else procs.cpu_seconds(self.worker_pid)
        rabbit = None if self.rabbit is None else process_cpu_seconds(self.rabbit)
        return Sample(worker, redis_cpu_seconds(self.client), rabbit)

    def per_task(self, before: Sample, after: Sample, tasks: int) -> dict[str, float]:
        """Microseconds per task between two samples: the worker's, Redis', RabbitMQ's, and
        ``broker_cpu_us``, the one that carried the messages (RabbitMQ on an AMQP row; Redis
        also holds the results and the counter there, and is reported beside it)."""
        if tasks <= 0:
            return {}
        scale = 1e6 / tasks
        out = {"redis_cpu_us": (after.redis - before.redis) * scale}
        if before.worker is not None and after.worker is not None:
            out["worker_cpu_us"] = (after.worker - before.worker) * scale
        if before.rabbitmq is not None and after.rabbitmq is not None:
            out["rabbitmq_cpu_us"] = (after.rabbitmq - before.rabbitmq) * scale
        out["broker_cpu_us"] = out.get("rabbitmq_cpu_us", out["redis_cpu_us"])
        if self.broker == "amqp" and "rabbitmq_cpu_us" not in out:
            del out["broker_cpu_us"]  # RabbitMQ is not on this machine: no figure, not Redis'
        return out


__all__ = ["Meter", "Sample", "process_cpu_seconds", "rabbitmq_pid", "redis_cpu_seconds"]
