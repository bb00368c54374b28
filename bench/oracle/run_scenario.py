"""Run one scenario on one system and print its observation: ``python run_scenario.py SYSTEM NAME``.

Runs in that system's venv (Celery's or celeriac's), with this folder on ``sys.path`` so that
``oracle_tasks`` and the app module import under the same names as in the worker. Prints one
``ORACLE-RESULT {json}`` line: ``{"value": ...}`` or ``{"error": "..."}``; the driver adds the
"hung" verdict when this process outlives its timeout.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from scenarios import BUDGETS, SCENARIOS, Kit, describe

MARK = "ORACLE-RESULT "


def celery_kit(name: str) -> Kit:
    from celery import chain, chord, group, signature
    from celery.result import AsyncResult, GroupResult
    from oracle_celery_app import app, t

    return Kit(
        system="celery",
        app=app,
        t=t,
        chain=chain,
        group=group,
        chord=chord,
        GroupResult=GroupResult,
        AsyncResult=AsyncResult,
        to_dict=dict,  # a Celery signature is a dict already
        from_dict=lambda data: signature(data, app=app),
        budget=BUDGETS[name],
    )


def celeriac_kit(name: str) -> Kit:
    from oracle_celeriac_app import app, t

    from celeriac import AsyncResult, GroupResult, Signature, chain, chord, group

    return Kit(
        system="celeriac",
        app=app,
        t=t,
        chain=chain,
        group=group,
        chord=chord,
        GroupResult=GroupResult,
        AsyncResult=AsyncResult,
        to_dict=lambda sig: sig.to_dict(),
        from_dict=lambda data: Signature.from_dict(data, app),
        budget=BUDGETS[name],
    )


def main(argv: list[str]) -> int:
    system, name = argv
    kit = celery_kit(name) if system == "celery" else celeriac_kit(name)
    outcome: dict[str, Any]
    try:
        outcome = {"value": SCENARIOS[name](kit)}
    except Exception as exc:  # the failure is the observation
        outcome = {"error": describe(exc, kit.budget)}
    print(MARK + json.dumps(outcome, default=repr, sort_keys=True), flush=True)
    # Skip interpreter teardown: a result consumer's thread must not turn a finished
    # scenario into a "hang" at exit.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
