"""Issue 16, point 3, on both brokers: Celery 5.7's own command line sees the celeriac worker.

``celery -A proj inspect ping|active|stats|registered`` and ``celery -A proj control
revoke|rate_limit|pool_grow`` run as subprocesses (the commands a team keeps using during a
migration) and get the celeriac worker's replies, printed as Celery prints its own workers';
what each control command asked for is then checked on the worker itself. A Celery worker
joining the fleet learns the celeriac worker's revokes through Celery's start-up handshake
(mingle). The replies' shapes on every broker and pool are tested in
tests/integration/test_remote_control.py; here the client is Celery's.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from worker_harness import wait_until

from interop.fleet import Fleet
from interop.flower import STATS_KEYS
from interop.runs import runs_of

pytestmark = [pytest.mark.amqp, pytest.mark.redis]

WAIT = 20.0


def in_parallel(fleet: Fleet, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run several ``celery`` commands at once (each is a second of interpreter start-up)."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda argv: fleet.celery_cli(*argv), commands))


def ok_line(node: str) -> re.Pattern[str]:
    """Celery's line for a node's successful reply (``->  node: OK``)."""
    return re.compile(rf"^->\s+{re.escape(node)}: OK$", re.MULTILINE)


def replies(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """The ``--json`` output of ``celery inspect``/``control``: ``{node: reply}``."""
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    parsed: dict[str, object] = json.loads(done.stdout)
    return parsed


def test_celery_inspect_ping_active_stats_registered(fleet: Fleet) -> None:
    node = fleet.names.celeriac_node
    release = fleet.root / f"release-{uuid.uuid4().hex}"
    blocker = fleet.celery.tasks["fleet.block"].apply_async(
        (str(release),), queue=fleet.names.celeriac_queue
    )
    try:
        wait_until(lambda: bool(runs_of(fleet.runs, blocker.id)), WAIT, "the task to run")
        to_node = ["-d", node, "-t", "10"]
        ping, ping_text, active, stats, registered, everyone = in_parallel(
            fleet,
            ["inspect", "ping", *to_node, "--json"],
            ["inspect", "ping", *to_node],
            ["inspect", "active", *to_node, "--json"],
            ["inspect", "stats", *to_node, "--json"],
            ["inspect", "registered", *to_node, "--json"],
            ["inspect", "ping", "-t", "1", "--json"],
        )
    finally:
        release.touch()
    assert replies(ping) == {node: {"ok": "pong"}}
    assert ping_text.returncode == 0
    assert ok_line(node).search(ping_text.stdout) and "pong" in ping_text.stdout
    # the whole fleet answers one broadcast: both kinds of worker
    assert {fleet.names.celery_node, node} <= set(replies(everyone))

    listed = replies(active)[node]
    assert isinstance(listed, list) and len(listed) == 1, listed
    running = listed[0]
    assert (running["id"], running["name"]) == (blocker.id, "fleet.block")
    assert isinstance(running["time_start"], float) and running["worker_pid"] > 0

    reply = replies(stats)[node]
    assert isinstance(reply, dict)
    assert set(reply) >= STATS_KEYS, STATS_KEYS - set(reply)
    assert isinstance(reply["clock"], str) and isinstance(reply["total"], dict)
    assert reply["broker"]["transport"] == fleet.names.kind
    vhost = {"amqp": fleet.names.vhost, "redis": "10"}[fleet.names.kind]
    assert reply["broker"]["virtual_host"] == vhost
    assert reply["pool"]["max-concurrency"] == 2 and len(reply["pool"]["processes"]) == 2
    assert reply["total"].get("fleet.block", 0) >= 1

    ours = sorted(name for name in fleet.celeriac.tasks if name.startswith("fleet."))
    assert replies(registered)[node] == ours
    assert blocker.get(timeout=WAIT) == "celeriac"


def test_celery_control_revoke_rate_limit_pool_grow(fleet: Fleet) -> None:
    node = fleet.names.celeriac_node
    queue = fleet.names.celeriac_queue
    doomed = str(uuid.uuid4())
    to_node = ["-d", node, "-t", "10"]
    revoke, limit, grow = in_parallel(
        fleet,
        ["control", "revoke", doomed, *to_node],
        ["control", "rate_limit", "fleet.paced", "2/s", *to_node],
        ["control", "pool_grow", "1", *to_node],
    )
    for done in (revoke, limit, grow):
        assert done.returncode == 0, done.stderr
        assert ok_line(node).search(done.stdout), done.stdout
    assert f"tasks {{'{doomed}'}} flagged as revoked" in revoke.stdout
    assert "new rate limit set successfully" in limit.stdout
    assert "pool will grow" in grow.stdout

    # revoke: the task sent afterwards with that id is REVOKED, never run
    celery = fleet.celery
    from celery.exceptions import TaskRevokedError  # type: ignore[import-untyped]

    sent = celery.tasks["fleet.add"].apply_async((1, 1), queue=queue, task_id=doomed)
    with pytest.raises(TaskRevokedError):
        sent.get(timeout=WAIT)
    assert runs_of(fleet.runs, doomed) == []

    # rate_limit: three tasks at 2/s take at least a second from first to last
    paced = [celery.tasks["fleet.paced"].apply_async(queue=queue) for _ in range(3)]
    times = sorted(p.get(timeout=WAIT) for p in paced)
    assert times[-1] - times[0] >= 0.9, times

    # pool_grow: the worker now has three children, then shrinks back
    def concurrency() -> int:
        stats = celery.control.inspect(destination=[node], timeout=5).stats() or {}
        return int(stats[node]["pool"]["max-concurrency"])

    assert concurrency() == 3
    shrunk = celery.control.pool_shrink(1, destination=[node], reply=True, timeout=5)
    assert shrunk == [{node: {"ok": "pool will shrink"}}]
    wait_until(lambda: concurrency() == 2, WAIT, "the pool to shrink back", interval=0.1)
    unlimited = celery.control.rate_limit("fleet.paced", None, destination=[node], reply=True)
    assert unlimited == [{node: {"ok": "rate limit disabled successfully"}}]


def test_a_celery_worker_joining_learns_the_celeriac_workers_revokes(fleet: Fleet) -> None:
    """Celery's start-up handshake (mingle: ``hello`` to every node) gets the celeriac worker's
    answer, and the new Celery worker takes over its revokes."""
    names = fleet.names
    doomed = str(uuid.uuid4())
    told = fleet.celeriac.control.revoke(doomed, destination=[names.celeriac_node], reply=True)
    assert told == [{names.celeriac_node: {"ok": f"tasks {{'{doomed}'}} flagged as revoked"}}]
    node = f"joining-{uuid.uuid4().hex[:4]}@{names.tag}"
    joining = fleet.start_celery_worker(node, [names.celery_queue], concurrency=1)
    with fleet.stopping(joining):
        joining.wait_for_line(r"mingle: sync complete")  # only celeriac knew of the revoke
        control = fleet.celery.control
        # "ready" is logged a moment before its mailbox listens (on Redis, a PUBLISH to nobody)
        wait_until(lambda: bool(control.ping([node], timeout=1)), WAIT, "its mailbox")
        revoked = control.inspect(destination=[node], timeout=5).revoked() or {}
        assert doomed in revoked.get(node, []), revoked
