"""``examples/django_project`` as a user runs it: ``migrate``, ``celeriac -A proj worker`` (a
real process, with a prefork child that loads Django by itself), and the view driven by Django's
test client from ``manage.py shell``: the task sent on commit confirms the order it reads."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "django_project"

#: Run in ``manage.py shell``: an order through the view, a rolled-back one, the method form.
SCRIPT = """
import json
from django.db import transaction
from django.test import Client
from celeriac.contrib.django.task import delay_on_commit
from orders.models import Order
from orders.tasks import archive, confirm
from proj.celery import app

client = Client()
created = client.post("/orders/", {"note": "two crates"}).json()
note = app.AsyncResult(created["task_id"]).get(timeout=60)
status = client.get(f"/orders/{created['order']}/").json()
with transaction.atomic():
    doomed = Order.objects.create(note="never")
    never = delay_on_commit(confirm, doomed.pk)
    transaction.set_rollback(True)
with transaction.atomic():
    kept = archive.delay_on_commit(7)
print(json.dumps({"note": note, "status": status, "never": never.state,
                  "archived": kept.get(timeout=60)}))
"""


def _env() -> dict[str, str]:
    """This environment without celeriac's or Django's settings, which would override the
    example's own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CELERIAC_", "CELERY_")) and k != "DJANGO_SETTINGS_MODULE"
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_the_example_project_runs_with_a_real_worker(tmp_path: Path) -> None:
    project = tmp_path / "django_project"
    shutil.copytree(
        EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3", "*.db*")
    )
    env = _env()

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    migrated = manage("migrate", "--verbosity", "0")
    assert migrated.returncode == 0, migrated.stderr
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celeriac", "-A", "proj", "worker", "-P", "prefork", "-c", "1"],
        cwd=project,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        ran = manage("shell", "-c", SCRIPT)
        worker_log = (tmp_path / "worker.log").read_text()
        assert ran.returncode == 0, f"{ran.stderr}\n--- worker ---\n{worker_log}"
        found = json.loads(ran.stdout.strip().splitlines()[-1])
        assert found == {
            "note": "two crates",
            "status": {"order": 1, "confirmed": True, "task": "SUCCESS"},
            "never": "PENDING",
            "archived": 7,
        }
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
        log.close()
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()
