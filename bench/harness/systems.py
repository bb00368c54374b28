"""The systems compared, as data: where each one's venv comes from, which adapter drives its
producer side, how its worker is started (its own normal CLI), and what each workload used.

Everything the report says about *how* a system was run is written here once, so the notes in
the table cannot drift from the commands actually executed.

celeriac has two rows, as Celery does: ``celeriac`` runs the default pool (prefork), and
``celeriac-threads`` the threads pool, which on these 2-core machines drains faster and answers
a round trip sooner (no pipe hop, no second process for each task to wake). Its io workload is
the asyncio pool's, like the other row's. It uses db 13: dbs 2-11 belong to the older rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

REDIS = "redis://127.0.0.1:6379"
AMQP = "amqp://guest:guest@127.0.0.1:5672//"
BASELINE = "celery-prefork"


@dataclass(frozen=True)
class System:
    """One row of the table.

    ``worker`` and ``io_worker`` are argv templates: ``{bin}`` is the venv's bin directory,
    ``{redis}`` the system's Redis URL. ``requires`` names a system that must have passed its
    probe first (the AMQP Celery row is only worth running when celeriac can run on AMQP too).
    """

    name: str
    venv: str
    adapter: str
    db: int
    worker: tuple[str, ...]
    io_worker: tuple[str, ...]
    notes: dict[str, str] = field(default_factory=dict)
    broker: str = "redis"
    requires: str | None = None

    def redis_url(self, base: str = REDIS, db: int | None = None) -> str:
        return f"{base}/{self.db if db is None else db}"


_CELERIAC = ("{bin}/celeriac", "-A", "bench_celeriac_app", "worker", "-l", "warning")
_CELERY = (
    "{bin}/celery", "-A", "bench_celery_app", "worker", "-l", "warning",
    "--without-mingle", "--without-gossip",
)  # fmt: skip

_CELERIAC_NOTES = {
    "pool": "prefork -c 2 (default pool)",
    "enqueue": "task.delay() loop",
    "bulk": "app.send_many (one batch publish)",
    "io": "asyncio pool -c 100, async def task",
    "roundtrip": "delay().get()",
}
_CELERY_NOTES = {
    "enqueue": "task.delay() loop",
    "bulk": "group(...).apply_async()",
    "roundtrip": "delay().get()",
    "flags": "--without-mingle --without-gossip (one worker)",
}

SYSTEMS: tuple[System, ...] = (
    System(
        name="celeriac",
        venv="celeriac",
        adapter="celeriac_bench.py",
        db=2,
        worker=(*_CELERIAC, "-P", "prefork", "-c", "2"),
        io_worker=(*_CELERIAC, "-P", "asyncio", "-c", "100"),
        notes=_CELERIAC_NOTES,
    ),
    System(
        name="celeriac-threads",
        venv="celeriac",
        adapter="celeriac_bench.py",
        db=13,
        worker=(*_CELERIAC, "-P", "threads", "-c", "2"),
        io_worker=(*_CELERIAC, "-P", "asyncio", "-c", "100"),
        notes={**_CELERIAC_NOTES, "pool": "threads -c 2"},
    ),
    System(
        name="celery-prefork",
        venv="celery",
        adapter="celery_bench.py",
        db=3,
        worker=(*_CELERY, "-P", "prefork", "-c", "2"),
        io_worker=(*_CELERY, "-P", "gevent", "-c", "100"),
        notes={**_CELERY_NOTES, "pool": "prefork -c 2", "io": "gevent pool -c 100"},
    ),
    System(
        name="celery-threads",
        venv="celery",
        adapter="celery_bench.py",
        db=4,
        worker=(*_CELERY, "-P", "threads", "-c", "2"),
        io_worker=(*_CELERY, "-P", "threads", "-c", "100"),
        notes={**_CELERY_NOTES, "pool": "threads -c 2", "io": "threads pool -c 100"},
    ),
    System(
        name="dramatiq",
        venv="dramatiq",
        adapter="dramatiq_bench.py",
        db=5,
        worker=("{bin}/dramatiq", "bench_dramatiq_app", "-p", "1", "-t", "2"),
        io_worker=("{bin}/dramatiq", "bench_dramatiq_app", "-p", "1", "-t", "100"),
        notes={
            "pool": "1 process x 2 threads",
            "enqueue": "actor.send() loop",
            "bulk": "group(...).run() (no bulk API: one enqueue per message)",
            "io": "1 process x 100 threads",
            "roundtrip": "send().get_result(block=True) (Results middleware, Redis)",
        },
    ),
    System(
        name="rq",
        venv="rq",
        adapter="rq_bench.py",
        db=6,
        worker=("{bin}/rq", "worker-pool", "-n", "2", "-u", "{redis}", "default"),
        io_worker=("{bin}/rq", "worker-pool", "-n", "2", "-u", "{redis}", "default"),
        notes={
            "pool": "rq worker-pool -n 2 (one job at a time per worker, forks per job)",
            "enqueue": "queue.enqueue() loop",
            "bulk": "queue.enqueue_many (one pipeline)",
            "io": "same 2 workers: RQ has no I/O concurrency",
            "roundtrip": "enqueue(...).latest_result(timeout=...) (blocking XREAD)",
        },
    ),
    System(
        name="arq",
        venv="arq",
        adapter="arq_bench.py",
        db=7,
        worker=("{bin}/arq", "bench_arq_app.WorkerSettings"),
        io_worker=("{bin}/arq", "bench_arq_app.IOWorkerSettings"),
        notes={
            "pool": "asyncio, max_jobs=2, poll_delay=0.01 s (default 0.5)",
            "enqueue": "await enqueue_job() loop (async-only producer)",
            "bulk": "asyncio.gather of enqueue_job, 100 in flight (no bulk API)",
            "io": "asyncio, max_jobs=100",
            "roundtrip": "await job.result(poll_delay=0.005) (polls)",
        },
    ),
    System(
        name="huey",
        venv="huey",
        adapter="huey_bench.py",
        db=8,
        worker=("{bin}/huey_consumer", "bench_huey_app.huey", "-w", "2", "-k", "thread", "-q"),
        io_worker=(
            "{bin}/huey_consumer",
            "bench_huey_app.huey",
            "-w",
            "100",
            "-k",
            "thread",
            "-q",
        ),
        notes={
            "pool": "huey_consumer -w 2 -k thread",
            "enqueue": "task() loop",
            "bulk": "task.map (a loop of enqueues; no bulk API)",
            "io": "-w 100 -k thread",
            "roundtrip": "result.get(blocking=True), notify_result=True (BLPOP)",
        },
    ),
    System(
        name="taskiq",
        venv="taskiq",
        adapter="taskiq_bench.py",
        db=9,
        worker=(
            "{bin}/taskiq",
            "worker",
            "bench_taskiq_app:broker",
            "--workers",
            "1",
            "--max-async-tasks",
            "2",
            "--log-level",
            "WARNING",
        ),
        io_worker=(
            "{bin}/taskiq",
            "worker",
            "bench_taskiq_app:broker",
            "--workers",
            "1",
            "--max-async-tasks",
            "100",
            "--log-level",
            "WARNING",
        ),
        notes={
            "pool": "1 worker process, --max-async-tasks 2 (ListQueueBroker)",
            "enqueue": "await task.kiq() loop (async-only producer)",
            "bulk": "asyncio.gather of kiq(), 100 in flight (no bulk API)",
            "io": "--max-async-tasks 100",
            "roundtrip": "await wait_result(check_interval=0.005) (polls)",
        },
    ),
    System(
        name="celeriac-amqp",
        venv="celeriac",
        adapter="celeriac_bench.py",
        db=10,
        worker=(*_CELERIAC, "-P", "prefork", "-c", "2"),
        io_worker=(*_CELERIAC, "-P", "asyncio", "-c", "100"),
        notes={**_CELERIAC_NOTES, "broker": "RabbitMQ; counter and results on Redis"},
        broker="amqp",
    ),
    System(
        name="celery-prefork-amqp",
        venv="celery",
        adapter="celery_bench.py",
        db=11,
        worker=(*_CELERY, "-P", "prefork", "-c", "2"),
        io_worker=(*_CELERY, "-P", "gevent", "-c", "100"),
        notes={
            **_CELERY_NOTES,
            "pool": "prefork -c 2",
            "io": "gevent pool -c 100",
            "broker": "RabbitMQ; counter and results on Redis",
        },
        broker="amqp",
        requires="celeriac-amqp",
    ),
)

BY_NAME = {system.name: system for system in SYSTEMS}
VENVS = sorted({system.venv for system in SYSTEMS})


def select(only: str | None) -> list[System]:
    """``--only a,b``: those systems in table order; an unknown name is an error, not a no-op."""
    if not only:
        return list(SYSTEMS)
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    return [system for system in SYSTEMS if system.name in names]
