"""Signal receivers of Celery's "Signals" guide, connected in the worker (the app's ``include``
imports this module there, and in every prefork child).

The guide's receivers print or change settings; these report what they were given to the test
process (see :mod:`proj.events`), keyed by the task id or by ``"worker"``.
"""

from __future__ import annotations

import os
from typing import Any

from celeriac import Queue, Task
from celeriac.signals import (
    celeryd_after_setup,
    celeryd_init,
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    task_revoked,
    task_success,
    worker_process_init,
    worker_ready,
)
from proj import events
from proj.celery import app
from proj.retries import some_task
from proj.tasks import add


@app.task(bind=True, default_retry_delay=0)
def signalled(self: Task[[str, str], str], key: str, mode: str) -> str:
    """Succeeds, fails (``mode="fail"``) or retries once first (``mode="retry"``)."""
    if mode == "fail":
        raise ValueError(f"{key} failed")
    if mode == "retry" and events.attempt(key) == 1:
        raise self.retry(exc=RuntimeError("once more"))
    return f"{key} ok"


@task_prerun.connect(sender=signalled)
def prerun(
    sender: Any = None, task_id: str = "", task: Any = None, args: Any = None, **kwargs: Any
) -> None:
    events.record(
        task_id, "task_prerun", task=task.name, args=list(args), sender_is_task=sender is task
    )


@task_postrun.connect(sender=signalled)
def postrun(
    sender: Any = None,
    task_id: str = "",
    task: Any = None,
    retval: Any = None,
    state: Any = None,
    **kwargs: Any,
) -> None:
    events.record(task_id, "task_postrun", retval=repr(retval), state=state)


@task_success.connect(sender=signalled)
def success(sender: Any = None, result: Any = None, **kwargs: Any) -> None:
    """Keyed by the result (unique per test), with what ``sender.request.id`` reads."""
    events.record(f"success:{result}", "task_success", request_id=sender.request.id)


@task_failure.connect(sender=signalled)
def failure(
    sender: Any = None,
    task_id: str = "",
    exception: BaseException | None = None,
    args: Any = None,
    traceback: Any = None,
    einfo: Any = None,
    **kwargs: Any,
) -> None:
    events.record(
        task_id,
        "task_failure",
        exception=repr(exception),
        args=list(args),
        has_traceback=traceback is not None,
        einfo=str(einfo),
    )


@task_retry.connect(sender=signalled)
def retried(sender: Any = None, request: Any = None, reason: Any = None, **kwargs: Any) -> None:
    events.record(request.id, "task_retry", reason=str(reason))


@task_revoked.connect(sender=add)
def revoked(sender: Any = None, request: Any = None, expired: Any = None, **kwargs: Any) -> None:
    events.record(request.id, "task_revoked", expired=expired, terminated=kwargs.get("terminated"))


# -- the worker --------------------------------------------------------------------------------
@celeryd_init.connect(sender="worker12@example.com")
def configure_worker12(conf: Any = None, **kwargs: Any) -> None:
    """Connected first, for a node that is not ours: it must never run."""
    events.record("worker", "configure_worker12")
    conf.task_default_rate_limit = "10/m"


@celeryd_init.connect
def configure_workers(sender: Any = None, conf: Any = None, **kwargs: Any) -> None:
    events.record("worker", "celeryd_init", sender=sender)
    if sender in ("worker1@example.com", "worker2@example.com"):
        conf.task_default_rate_limit = "10/m"


@celeryd_after_setup.connect
def setup_direct_queue(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A direct queue for each worker, named after it (Celery's form:
    ``instance.app.amqp.queues.select_add(queue_name)``; the xfail test tries that one)."""
    queue_name = f"{sender}.dq"  # sender is the nodename of the worker
    instance.queues.append(Queue(queue_name))


@worker_ready.connect
def ready(sender: Any = None, **kwargs: Any) -> None:
    events.record("worker", "worker_ready", hostname=sender.hostname, pid=os.getpid())


@worker_process_init.connect
def child_ready(sender: Any = None, **kwargs: Any) -> None:
    events.record("worker", "worker_process_init", pid=os.getpid())


@task_postrun.connect(sender=some_task)
def ignored_postrun(
    sender: Any = None, task_id: str = "", state: Any = None, **kwargs: Any
) -> None:
    """For the "Ignore" test: tells when the worker is done with the task."""
    events.record(task_id, "task_postrun", state=state)
