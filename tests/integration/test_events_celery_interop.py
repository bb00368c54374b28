"""Events between Celery 5.7 and celeriac on RabbitMQ, both ways, through real processes.

Celery's own ``celery events --dump`` prints a celeriac worker's events (its heartbeats and each
task's received, started and succeeded, with name, args and result), and Celery's ``State``
folds them into a SUCCESS task on a live worker; celeriac's receiver and ``State`` read a Celery
worker's events (``worker-online``, its ``task.multi`` batches) just as well. Needs the reference
Celery 5.7 (a test dependency); every process a test starts is stopped by it.
"""

from __future__ import annotations

import json
import signal
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps.events_tasks import build_app
from event_collector import Collector
from events_brokers import Broker, open_broker
from worker_harness import WorkerProcess, child_env, start_cli_worker, wait_until

from celeriac import states
from celeriac.events import State

pytestmark = [pytest.mark.amqp]

#: Celery 5.7 is a test dependency: its command runs from this venv.
CELERY = [sys.executable, "-m", "celery"]
TIMEOUT = 20.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with open_broker("amqp", tmp_path) as found:
        yield found


def celery_env() -> dict[str, str]:
    """Celery's processes: none of celeriac's test paths, unbuffered output."""
    env = child_env({})
    env.pop("PYTHONPATH", None)
    return env


def test_celery_events_dump_prints_a_celeriac_workers_events(
    broker: Broker, tmp_path: Path
) -> None:
    hostname = f"ev{uuid.uuid4().hex[:6]}@itest"
    dump = WorkerProcess(
        [*CELERY, "-b", broker.url, "events", "--dump"],
        celery_env(),
        tmp_path,
    )
    worker: WorkerProcess | None = None
    app = broker.app()
    try:
        worker = start_cli_worker("apps.events_tasks", broker.env(), tmp_path, "-E", "-n", hostname)
        wait_until(
            lambda: any(f"{hostname} [" in line for line in list(dump.stdout_lines)),
            TIMEOUT,
            "celery events --dump to show the worker",
        )
        task_id = app.send_task("ev.add", (2, 3)).id
        wait_until(
            lambda: any("task succeeded" in line and task_id in line for line in dump.stdout_lines),
            TIMEOUT,
            "the task's events in celery's dump",
        )
        lines = [line for line in list(dump.stdout_lines) if task_id in line]
        assert [line.split("] ")[1].split(":")[0] for line in lines] == [
            "task received",
            "task started",
            "task succeeded",
        ]
        assert f"ev.add({task_id}) args=(2, 3) kwargs={{}}" in lines[0]
        assert "result=5" in lines[2] and "runtime=" in lines[2]
        assert "Traceback" not in dump.stderr()
    finally:
        dump.stop()
        if worker is not None:
            worker.stop()
        app.close()


CELERY_STATE = """
import json, sys
from celery import Celery
app = Celery("watch", broker=sys.argv[1])
state = app.events.State()
task_id, hostname = sys.argv[2], sys.argv[3]
heard = []

def on_event(event):
    state.event(event)
    if event["hostname"] == hostname and not heard:
        heard.append(event)
        print("heard the worker", flush=True)
    if event["type"] == "task-succeeded" and event["uuid"] == task_id:
        raise SystemExit(0)

with app.connection() as conn:
    receiver = app.events.Receiver(conn, handlers={"*": on_event})
    try:
        receiver.capture(limit=None, timeout=20, wakeup=False)
    except SystemExit:
        pass
task = state.tasks[task_id]
worker = task.worker
print(json.dumps({"state": task.state, "name": task.name, "result": task.result,
                  "worker": worker.hostname, "alive": worker.alive,
                  "received": task.received is not None}), flush=True)
"""


def test_celerys_state_folds_a_celeriac_workers_events(broker: Broker, tmp_path: Path) -> None:
    hostname = f"ev{uuid.uuid4().hex[:6]}@itest"
    script = tmp_path / "celery_state.py"
    script.write_text(CELERY_STATE)
    task_id = str(uuid.uuid4())
    argv = [sys.executable, str(script), broker.url, task_id, hostname]
    watcher = WorkerProcess(argv, celery_env(), tmp_path)
    worker: WorkerProcess | None = None
    app = broker.app()
    try:
        worker = start_cli_worker("apps.events_tasks", broker.env(), tmp_path, "-E", "-n", hostname)
        wait_until(  # its heartbeats (every 2 s) reach Celery's receiver once it is bound
            lambda: "heard the worker" in watcher.stdout_lines, TIMEOUT, "Celery's receiver"
        )
        app.send_task("ev.add", (2, 3), task_id=task_id)
        assert watcher.wait_exit(TIMEOUT) == 0, watcher.output()
        folded = json.loads(watcher.stdout_lines[-1])
        assert folded == {
            "state": "SUCCESS",
            "name": "ev.add",
            "result": "5",
            "worker": hostname,
            "alive": True,
            "received": True,
        }
    finally:
        watcher.stop()
        if worker is not None:
            worker.stop()
        app.close()


CELERY_APP = """
from celery import Celery
app = Celery("capp", broker="{url}")
app.conf.task_default_queue = "{queue}"

@app.task(name="c.add")
def add(x, y):
    return x + y
"""


def test_celeriacs_receiver_and_state_read_a_celery_workers_events(
    broker: Broker, tmp_path: Path
) -> None:
    (tmp_path / "capp.py").write_text(
        textwrap.dedent(CELERY_APP.format(url=broker.url, queue=broker.queue))
    )
    hostname = f"cw{uuid.uuid4().hex[:6]}@itest"
    # a fleet that mixes both declares its queues without priorities (topology.py says why):
    # whichever of the two declares the queue first, the other then reads it as it is. With
    # celeriac's default (priorities), a send that declared the queue before the Celery worker's
    # own declaration (the worker sends worker-online before it declares) failed that worker.
    app = build_app(broker.url, {**broker.options, "max_priority": 0}, broker.queue)
    collector = Collector(app.create_transport())
    argv = [*CELERY, "-A", "capp", "worker", "-E", "-P", "solo"]
    argv += ["-n", hostname, "-l", "info", "--without-mingle", "--without-gossip"]
    celery = WorkerProcess(argv, celery_env(), tmp_path)
    try:
        collector.wait_for(
            "the Celery worker's worker-online",
            lambda es: any(e["type"] == "worker-online" and e["hostname"] == hostname for e in es),
        )
        task_id = app.send_task("c.add", (2, 3)).id
        collector.wait_for(
            "its task-succeeded",
            lambda es: any(e.get("uuid") == task_id and e["type"] == "task-succeeded" for e in es),
        )
        state = State()
        for event in collector.events(hostname):
            state.event({**event, "local_received": event["timestamp"]})
        task = state.tasks[task_id]
        assert (task.state, task.name, task.args, task.result) == (
            states.SUCCESS,
            "c.add",
            "(2, 3)",
            "5",
        )
        online = next(e for e in collector.events(hostname) if e["type"] == "worker-online")
        assert online["sw_ident"] == "py-celery" and online["freq"] == 2.0
        batches = [m for m in collector.messages if m.hostname == hostname and m.is_list]
        assert batches and all(m.routing_key == "task.multi" for m in batches)
    finally:
        collector.close()
        celery.send(signal.SIGTERM)
        celery.stop()
        app.close()
