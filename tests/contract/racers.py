"""Python child processes that race each other from one starting gun, for the contract suites.

Each child runs a snippet with a JSON argument (``ARG``), prints ``ready`` once set up, waits
for ``go`` on stdin, does its part and prints one JSON line with its result. The parent waits on
those lines (events, never sleeps), fires every child at once, and stops every child it started
whatever happens.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

READY_TIMEOUT = 20.0
RUN_TIMEOUT = 30.0

_PRELUDE = """
import asyncio, json, sys
ARG = json.loads(sys.argv[1])
"""
_GO = """
print("ready", flush=True)
if sys.stdin.readline().strip() != "go":
    sys.exit(3)
"""


def race(setup: str, body: str, args: list[Any]) -> list[Any]:
    """Run one child per item of ``args``: ``setup`` (may print nothing), then ``ready``, the
    gun, then ``body``, which must set ``RESULT``; returns each child's ``RESULT`` in order."""
    source = _PRELUDE + textwrap.dedent(setup) + _GO + textwrap.dedent(body)
    source += "\nprint(json.dumps(RESULT), flush=True)\n"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", source, json.dumps(arg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for arg in args
    ]
    try:
        for child in children:
            assert child.stdout is not None
            line = _readline(child, READY_TIMEOUT)
            assert line == "ready", f"child not ready: {line!r} {_stderr(child)}"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = []
        for child in children:
            out, err = child.communicate(timeout=RUN_TIMEOUT)
            assert child.returncode == 0, f"child failed ({child.returncode}): {err[-2000:]}"
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(5)


def _readline(child: subprocess.Popen[str], timeout: float) -> str:
    """The child's next stdout line; on a dead or silent child, fail (the caller kills it)."""
    import selectors

    assert child.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError(f"no line from the child in {timeout} s")
    return child.stdout.readline().strip()


def _stderr(child: subprocess.Popen[str]) -> str:
    if child.poll() is None:
        return ""
    assert child.stderr is not None
    return child.stderr.read()[-2000:]
