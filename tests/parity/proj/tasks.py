"""``proj/tasks.py``: the tasks of Celery's "First Steps", "Next Steps", "Calling Tasks",
"Canvas" and "Routing Tasks" guides, written as the guides write them (only the imports and type
hints changed), so that each test sends the documented call to a real worker."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from celeriac import SoftTimeLimitExceeded, Task
from celeriac.utils.log import get_task_logger
from proj import events
from proj.celery import app

logger = get_task_logger(__name__)


# -- "Next Steps": proj/tasks.py --------------------------------------------------------------
@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def mul(x: int, y: int) -> int:
    return x * y


@app.task
def xsum(numbers: list[int]) -> int:
    return sum(numbers)


# -- "Canvas": Chords -----------------------------------------------------------------------------
@app.task
def tsum(numbers: list[int]) -> int:
    return sum(numbers)


@app.task
def raising_task() -> None:
    raise ValueError("something something")


@app.task
def on_chord_error(request: Any, exc: BaseException, traceback: Any) -> None:
    """The chord errback of the guide; it reports instead of printing."""
    events.record(request.id, "on_chord_error", exc=repr(exc), traceback=str(traceback))


@app.task
def log_error(request: Any, exc: BaseException, traceback: Any) -> None:
    """The errback of "Canvas: Chains" (it writes to a file per task; this one reports)."""
    events.record(request.id, "log_error", exc=repr(exc), traceback=str(traceback))


@app.task
def log_result(result: Any) -> None:
    events.record(str(result), "log_result")


# -- "Calling Tasks": Linking ------------------------------------------------------------------
@app.task
def error_handler(request: Any, exc: BaseException, traceback: Any) -> None:
    """Celery 5's errback: called in the worker with the failed task's request."""
    events.record(
        request.id, "error_handler", exc=repr(exc), traceback=str(traceback), args=request.args
    )


@app.task
def id_error_handler(uuid: str) -> None:
    """The older errback shape, sent as a task with the failed task's id."""
    from celeriac import AsyncResult

    result: AsyncResult[Any] = AsyncResult(uuid)
    exc = result.get(propagate=False, disable_sync_subtasks=False)
    events.record(uuid, "id_error_handler", exc=repr(exc), traceback=result.traceback)


@app.task
def other_task(value: Any) -> None:
    events.record(str(value), "other_task")


# -- "Calling Tasks": On message; "Tasks": Custom states ----------------------------------------
@app.task(bind=True)
def hello(self: Task[[int, int], str], a: int, b: int) -> str:
    """The guide sleeps between its updates; this one waits for the test to have seen each."""
    self.update_state(state="PROGRESS", meta={"progress": 50})
    events.wait_go(f"{self.request.id}:50")
    self.update_state(state="PROGRESS", meta={"progress": 90})
    events.wait_go(f"{self.request.id}:90")
    return "hello world: %i" % (a + b)  # noqa: UP031 - the guide's own line


@app.task(bind=True)
def upload_files(self: Task[[list[str]], None], filenames: list[str]) -> None:
    for i, _file in enumerate(filenames):
        if not self.request.called_directly:
            self.update_state(state="PROGRESS", meta={"current": i, "total": len(filenames)})


@app.task(bind=True, track_started=True)
def long_running(self: Task[[], str]) -> str:
    """A task with ``track_started`` that runs until the test lets it finish."""
    events.wait_go(self.request.id)
    return "done"


# -- "Tasks": Task Request, Logging, Names, Argument checking ----------------------------------
@app.task(bind=True)
def dump_context(self: Task[[int, int], dict[str, Any]], x: int, y: int) -> dict[str, Any]:
    request = self.request
    print(f"Executing task id {request.id}, args: {request.args!r} kwargs: {request.kwargs!r}")
    return {
        "id": request.id,
        "args": list(request.args),
        "kwargs": request.kwargs,
        "retries": request.retries,
        "is_eager": request.is_eager,
        "hostname": request.hostname,
        "root_id": request.root_id,
        "parent_id": request.parent_id,
        "group": request.group,
        "correlation_id": request.correlation_id,
        "eta": request.eta,
        "expires": request.expires,
        "timelimit": list(request.timelimit),
        "delivery_info": dict(request.delivery_info),
        "headers_task": (request.headers or {}).get("task"),
        "pid": os.getpid(),
    }


@app.task(bind=True)
def request_extras(self: Task[[], dict[str, Any]]) -> dict[str, Any]:
    """The request fields of the guide's list that ``dump_context`` does not read, each read
    on its own (a missing one reads as ``"<missing>"``) so that one gap does not hide another."""
    request = self.request
    reads: dict[str, Callable[[], Any]] = {
        "called_directly": lambda: request.called_directly,
        "origin": lambda: request.origin,
        "utc": lambda: request.utc,
        "exchange": lambda: request.delivery_info["exchange"],
        "routing_key": lambda: request.delivery_info["routing_key"],
    }
    found: dict[str, Any] = {}
    for name, read in reads.items():
        try:
            found[name] = read()
        except (AttributeError, KeyError):
            found[name] = "<missing>"
    return found


@app.task
def add_logged(x: int, y: int) -> int:
    logger.info(f"Adding {x} + {y}")
    return x + y


@app.task(rate_limit="10/s")
def limited(i: int) -> float:
    """ "List of Options", Task.rate_limit: at most ten starts a second on a worker."""
    return time.time()


@app.task(name="sum-of-two-numbers")
def named_add(x: int, y: int) -> int:
    return x + y


@app.task(typing=False)
def unchecked_add(x: int, y: int) -> int:
    return x + y


@app.task(ignore_result=True)
def mytask() -> str:
    return "something"


@app.task
def update_page_info(url: str) -> str:
    """The guide's "bad" task: it waits for a subtask inside a task."""
    page: str = fetch_page.delay(url).get()
    return page


@app.task
def update_page_info_anyway(url: str) -> str:
    """The same, with the guide's ``disable_sync_subtasks=False`` escape hatch."""
    page: str = fetch_page.delay(url).get(disable_sync_subtasks=False)
    return page


@app.task
def fetch_page(url: str) -> str:
    return f"<html>{url}</html>"


@app.task(bind=True)
def headers_seen(self: Task[[], dict[str, Any]]) -> dict[str, Any]:
    """What a custom header sent with ``headers=`` looks like inside the task."""
    return {
        "tenant": self.request.get("tenant"),
        "in_headers": (self.request.headers or {}).get("tenant"),
        "shadow": (self.request.headers or {}).get("shadow"),
    }


# -- "Routing Tasks" -----------------------------------------------------------------------------
@app.task(bind=True)
def hipri_add(self: Task[[int, int], Any], x: int, y: int) -> Any:
    """Routed by the glob ``proj.tasks.hipri_*`` of ``task_routes``."""
    return [x + y, self.request.delivery_info.get("queue")]


@app.task(bind=True)
def import_feed(self: Task[[str], Any], url: str) -> Any:
    """Routed to ``feed_tasks`` (a topic exchange) with the routing key ``feed.import``."""
    return [url, self.request.delivery_info.get("queue")]


@app.task(bind=True)
def video_compress(self: Task[[str], Any], name: str) -> Any:
    """Routed by the regular expression ``proj\\.tasks\\.(video|image)_.*``."""
    return [name, self.request.delivery_info.get("queue")]


@app.task(bind=True, ignore_result=True)
def reload_cache(self: Task[[str], None], key: str) -> None:
    """Routed to the ``Broadcast("broadcast_tasks")`` queue: every worker runs it."""
    events.record(key, "reload_cache", hostname=self.request.hostname)


@app.task(bind=True)
def where(self: Task[[], Any]) -> Any:
    """Where the message that ran this task was delivered from."""
    return [self.request.delivery_info.get("queue"), self.request.delivery_info.get("priority")]


@app.task
def echo(*args: Any, **kwargs: Any) -> list[Any]:
    """What a signature's partial arguments became: ``[args, kwargs]``."""
    return [list(args), kwargs]


# -- "Canvas": immutability and combining ---------------------------------------------------------
@app.task
def reset_buffers() -> str:
    """A callback that takes no argument: linked as ``reset_buffers.si()``."""
    events.record("reset_buffers", "reset_buffers")
    return "reset"


@app.task
def notify_complete(import_id: str) -> str:
    return f"import {import_id} complete"


@app.task
def create_user(username: str, first: str, last: str, email: str) -> str:
    return username


@app.task
def import_contacts(username: str) -> str:
    return f"contacts of {username}"


@app.task
def send_welcome_email(username: str) -> str:
    return f"welcome {username}"


# -- "Workers Guide": Time Limits ------------------------------------------------------------
def do_work(seconds: float = 20.0) -> str:
    """Work that outlasts any time limit of the suite (pure Python, so a limit can stop it)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return "finished"


def clean_up_in_a_hurry() -> str:
    return "cleaned up"


@app.task(soft_time_limit=0.3)
def mytask_soft() -> str:
    try:
        return do_work()
    except SoftTimeLimitExceeded:
        return clean_up_in_a_hurry()


@app.task(time_limit=0.3)
def runaway() -> str:
    return do_work()
