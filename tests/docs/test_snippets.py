"""Every code sample of the documentation runs (issue 18, point 4).

Each page (docs/**/*.md and README.md) is one test: ``page_runner.py`` runs its blocks in order
in a fresh process whose working directory is an empty temporary one (see that module for what
each language gets, and ``doc_blocks.py`` for the markers a block may carry). The selected pages
run :data:`JOBS` at a time (they share nothing: each has its own directory, SQLite files, Redis
prefixes and queue names), started together by a module fixture, and each test waits for its
own page. A skip is explicit per block, with its reason; the total is held under
:data:`MAX_SKIPS` by the last test, which also prints every skip, so that skips cannot grow
unnoticed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from doc_blocks import KINDS, REPO, Block, blocks_of, documentation_pages

from conftest import REQUIRE_SERVICES, service_answers

RUNNER = Path(__file__).resolve().parent / "page_runner.py"
PAGE_TIMEOUT = 120.0
#: Pages run at once (the machine has 2 cores; most of a page's time is waiting on a worker).
JOBS = int(os.environ.get("SNIPPET_JOBS", "2"))
#: Blocks marked skip across the whole documentation (each with its reason).
MAX_SKIPS = 6
SERVICES = {"redis": 6379, "amqp": 5672, "postgres": 5432}

PAGES = documentation_pages()
RESULTS: dict[str, dict[str, Any]] = {}


def page_id(path: Path) -> str:
    return str(path.relative_to(REPO))


def runner_env() -> dict[str, str]:
    """The test's environment without celeriac's and Celery's settings variables (they would
    win over what a page sets), with the servers that answer."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CELERIAC_", "CELERY_")) or k == "CELERIAC_REQUIRE_SERVICES"
    }
    answering = [name for name, port in SERVICES.items() if service_answers(port)]
    env["SNIPPET_SERVICES"] = ",".join(answering)
    env.pop("PYTHONPATH", None)
    return env


def runs_anything(blocks: list[Block]) -> bool:
    return any(b.kind != "text" for b in blocks)


def weight(blocks: list[Block]) -> int:
    """A rough cost, to start the slow pages first: processes started and commands run."""
    return sum(
        10 if {"background", "run", "worker"} & set(b.marker) else 1
        for b in blocks
        if b.kind != "text"
    )


def run_page(page: Path, workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUNNER), str(page)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=PAGE_TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def page_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[subprocess.CompletedProcess[str]]]]:
    """Start every selected page with code in it, slowest first, JOBS at a time."""
    selected: list[Path] = []
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and getattr(item, "originalname", "") == "test_page_samples_run":
            selected.append(callspec.params["page"])
    blocks = {page: blocks_of(page) for page in selected}
    runnable = sorted(
        (page for page in selected if runs_anything(blocks[page])),
        key=lambda page: -weight(blocks[page]),
    )
    env = runner_env()
    pool = ThreadPoolExecutor(max_workers=JOBS, thread_name_prefix="docs-page")
    try:
        yield {
            page_id(page): pool.submit(
                run_page, page, tmp_path_factory.mktemp(page.stem, numbered=True), env
            )
            for page in runnable
        }
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_page_samples_run(
    page: Path, page_runs: dict[str, Future[subprocess.CompletedProcess[str]]]
) -> None:
    name = page_id(page)
    running = page_runs.get(name)
    if running is None:  # prose and diagrams only: nothing to start
        blocks = blocks_of(page)
        RESULTS[name] = {"counts": {"text": len(blocks)} if blocks else {}, "skips": []}
        return
    done = running.result(timeout=PAGE_TIMEOUT * 3)
    if done.returncode != 0:
        pytest.fail(f"{name}:\n{done.stderr[-12000:]}\n{done.stdout[-3000:]}")
    RESULTS[name] = json.loads(done.stdout.strip().splitlines()[-1])


def test_every_block_has_a_known_language() -> None:
    """Fails at collection speed on a language the runner would not check (a typo in a fence)."""
    unknown = [
        f"{b.where}: {b.language!r}"
        for page in PAGES
        for b in blocks_of(page)
        if b.kind == "unknown" and "skip" not in b.marker
    ]
    assert unknown == [], f"languages not in {sorted(KINDS)}: {unknown}"


def test_skips_are_few_and_said(
    capsys: pytest.CaptureFixture[str],
    page_runs: dict[str, Future[subprocess.CompletedProcess[str]]],
) -> None:
    """The totals of every page's blocks, and every skip with why: read from the pages' runs
    themselves, so the order the tests run in (xdist may change it) does not matter."""
    for page in PAGES:
        name = page_id(page)
        running = page_runs.get(name)
        if name in RESULTS:
            continue
        if running is None:
            blocks = blocks_of(page)
            RESULTS[name] = {"counts": {"text": len(blocks)} if blocks else {}, "skips": []}
            continue
        done = running.result(timeout=PAGE_TIMEOUT * 3)
        if done.returncode != 0:
            pytest.skip(f"{name} failed (its own test says why)")
        RESULTS[name] = json.loads(done.stdout.strip().splitlines()[-1])
    totals: dict[str, int] = {}
    skips: list[dict[str, str]] = []
    for result in RESULTS.values():
        for kind, count in result["counts"].items():
            totals[kind] = totals.get(kind, 0) + count
        skips += result["skips"]
    with capsys.disabled():
        print(f"\ndocumentation blocks: {json.dumps(totals, sort_keys=True)}")
        for skip in skips:
            print(f"  skipped {skip['where']}: {skip['reason']}")
    marked = [s for s in skips if not s["reason"].startswith("needs ")]
    assert len(marked) <= MAX_SKIPS, marked
    if REQUIRE_SERVICES:
        assert len(marked) == len(skips)
