"""``GroupResult.join()`` and ``save()``/``restore()`` from another process, on Redis and SQLite.

The promise (docs/guide/canvas.md, "Groups"): a ``GroupResult`` has ``get``, ``join``, ``ready``...
and ``save()``/``GroupResult.restore(id)`` to find it again from another process. The parity
suite holds ``join()`` of a group that succeeds, and tests/integration/test_canvas_scenarios.py
the restore of a group that was sent; here a group is built by hand from tasks sent one by one
(so only ``save()`` stores it), one member fails and one is still running: ``join`` waits under
one deadline, re-raises the failure or, with ``propagate=False``, returns it in its place, and a
Python process of its own restores the group by id and joins it to the same values; ``forget()``
removes it. A worker runs in this process on the real broker.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apps.promise_brokers import Namespace
from worker_harness import child_env

from celeriac import AsyncResult, GroupResult, TimeoutError, states
from celeriac.testing import memory_app, worker_thread

WAIT = 15.0
#: Run in a process of its own: restore the group by id and join it, printing what came back.
RESTORE = """
import json, sys
from celeriac import Celeriac, GroupResult
backend, options, group_id = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
app = Celeriac("elsewhere", broker="memory://", backend=backend,
               result_backend_transport_options=options)
restored = GroupResult.restore(group_id, app=app)
values = restored.join(timeout=10, propagate=False)
print(json.dumps({"ids": [r.id for r in restored], "values": [repr(v) for v in values]}))
app.close()
"""


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def namespace(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Namespace]:
    made = Namespace(request.param, tmp_path)
    try:
        yield made
    finally:
        made.close()


def restore_elsewhere(namespace: Namespace, group_id: str, cwd: Path) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            RESTORE,
            namespace.backend,
            json.dumps(namespace.transport_options),
            group_id,
        ],
        env=child_env({}),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    restored: dict[str, Any] = json.loads(done.stdout)
    return restored


def test_a_saved_group_is_joined_here_and_restored_elsewhere(
    namespace: Namespace, tmp_path: Path
) -> None:
    app = namespace.app()
    release = threading.Event()

    @app.task(name="pr.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="pr.fail")
    def fail(x: int) -> None:
        raise ValueError("bad", x)

    @app.task(name="pr.wait")
    def wait() -> str:
        if not release.wait(WAIT * 2):
            raise RuntimeError("never released")
        return "released"

    with worker_thread(app, concurrency=3):
        members: list[AsyncResult[Any]] = [add.delay(1, 1), fail.delay(7), add.delay(2, 2)]
        members.append(wait.delay())
        group = GroupResult("promise-group-" + members[0].id, members, app=app).save()
        try:
            with pytest.raises(TimeoutError, match=r"2/4 succeeded"):
                # one deadline for all: the failure is passed over, the running one is not done
                group.join(timeout=0.5, propagate=False)
            assert not group.ready() and group.waiting()
        finally:
            release.set()
        values = group.join(timeout=WAIT, propagate=False)
        assert values[0] == 2 and values[2] == 4 and values[3] == "released"
        assert isinstance(values[1], ValueError) and values[1].args == ("bad", 7)
        with pytest.raises(ValueError, match="bad"):
            group.join(timeout=WAIT)  # propagate: the failure, in order
        assert group.ready() and group.failed() and group.completed_count() == 3

    elsewhere = restore_elsewhere(namespace, group.id, tmp_path)
    assert elsewhere["ids"] == [m.id for m in members]
    assert elsewhere["values"] == ["2", "ValueError('bad', 7)", "4", "'released'"]

    group.forget()
    assert GroupResult.restore(group.id, app=app) is None
    assert [m.state for m in members] == [states.PENDING] * 4  # their results are gone too


def test_join_takes_celerys_callback() -> None:
    app = memory_app("promise-join")  # the signature is in question, not the broker

    @app.task(name="pr.add")
    def add(x: int, y: int) -> int:
        return x + y

    seen: list[tuple[str, Any]] = []
    with worker_thread(app, concurrency=2):
        members = [add.delay(i, i) for i in range(3)]
        group = GroupResult("promise-group-cb-" + members[0].id, members, app=app)
        joined = group.join(timeout=WAIT, callback=lambda tid, v: seen.append((tid, v)))
    app.close()
    assert joined == []
    assert seen == [(m.id, 2 * i) for i, m in enumerate(members)]
