"""``@app.task`` is ParamSpec-typed: mypy rejects bad ``delay`` calls and infers results."""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api

SNIPPET = """
from celeriac import Celeriac, Task

app = Celeriac("t", broker="memory://")

@app.task
def add(x: int, y: int) -> int:
    return x + y

@app.task(bind=True, max_retries=2)
def bound(self: Task[[int], int], x: int) -> int:
    return x

@app.task(queue="io")
async def fetch(url: str) -> bytes:
    return b""

add.delay(1, 2)
add.delay("x", y=[])
bound.delay(1)
bound.delay("no")
fetch.delay(42)
reveal_type(add.delay(1, 2).get())
reveal_type(fetch.delay("u"))
"""


@pytest.mark.slow
def test_mypy_checks_task_arguments_and_results(tmp_path: Path) -> None:
    source = tmp_path / "user_code.py"
    source.write_text(SNIPPET)
    stdout, _, status = api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(source)]
    )
    assert status == 1
    errors = [line for line in stdout.splitlines() if ": error:" in line]
    lines = {int(line.split(":")[1]) for line in errors}
    text = SNIPPET.splitlines()
    flagged = {text[n - 1].strip() for n in lines}
    assert flagged == {'add.delay("x", y=[])', 'bound.delay("no")', "fetch.delay(42)"}
    assert 'Revealed type is "int"' in stdout
    assert 'Revealed type is "celeriac.results.result.AsyncResult[bytes]"' in stdout
