"""The workflows the oracle runs, written once against a :class:`Kit` that hides the system.

Each scenario builds a workflow the way a user would and returns what it observed as plain data
(JSON): a value, or a dict of several observations. Where one step may fail or hang without
making the rest meaningless, it goes through :meth:`Kit.attempt`, so one scenario can report
"get() raised X, the failing task's state is Y, the errback ran Z times". Nothing here asserts:
the oracle compares what Celery observed with what celeriac observed, it does not judge either.

The first block mirrors ``tests/integration/test_canvas_scenarios.py`` one test after another;
the second is what a Celery user would try next (deeper nesting, links on chains, partials).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import oracle_tasks
from oracle_tasks import Tasks

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
DEFAULT_BUDGET = 10.0


def normalize(text: str) -> str:
    """Task ids differ between runs and systems: compare messages with every id as ``<id>``."""
    return UUID.sub("<id>", text)


def describe(exc: BaseException, waited: float) -> str:
    """An exception as the table shows it; a timeout of ``get()`` is the hang it stands for."""
    name = type(exc).__name__
    if name == "TimeoutError":
        return f"hung after {waited:.0f} s"
    return normalize(f"{name}: {exc}")


@dataclass
class Kit:
    """One system's canvas API, with the helpers every scenario shares."""

    system: str
    app: Any
    t: Tasks
    chain: Any
    group: Any
    chord: Any
    GroupResult: Any
    AsyncResult: Any
    to_dict: Callable[[Any], dict[str, Any]]
    from_dict: Callable[[dict[str, Any]], Any]
    budget: float = DEFAULT_BUDGET
    started: float = field(default_factory=time.monotonic)

    def timeout(self) -> float:
        """What is left of the scenario's budget, so several ``get()`` calls share it."""
        return max(0.5, self.budget - (time.monotonic() - self.started))

    def get(self, result: Any, **options: Any) -> Any:
        return result.get(timeout=self.timeout(), **options)

    def attempt(self, step: Callable[[], Any]) -> Any:
        """``step()``'s value, or the exception it raised as text."""
        try:
            return step()
        except Exception as exc:  # every failure is an observation here
            return describe(exc, self.budget)

    def tag(self) -> str:
        return uuid.uuid4().hex[:12]

    def settle(self, read: Callable[[], Any], want: Any, wait: float = 3.0) -> Any:
        """``read()`` once it equals ``want``, or whatever it is after ``wait`` seconds.

        Errbacks and counters land after ``get()`` returns: give both systems the same grace.
        """
        deadline = time.monotonic() + wait
        value = read()
        while value != want and time.monotonic() < deadline:
            time.sleep(0.05)
            value = read()
        return value

    runs = staticmethod(oracle_tasks.runs)
    notes = staticmethod(oracle_tasks.notes)


Scenario = Callable[[Kit], Any]
SCENARIOS: dict[str, Scenario] = {}
BUDGETS: dict[str, float] = {}


def scenario(budget: float = DEFAULT_BUDGET) -> Callable[[Scenario], Scenario]:
    def register(fn: Scenario) -> Scenario:
        SCENARIOS[fn.__name__] = fn
        BUDGETS[fn.__name__] = budget
        return fn

    return register


def kind(result: Any) -> str:
    return type(result).__name__


def stored(result: Any) -> Any:
    """What the backend holds for ``result`` (``.result``), read without raising."""
    value = result.result
    return describe(value, 0) if isinstance(value, BaseException) else value


@scenario(budget=60.0)
def _warmup(k: Kit) -> Any:
    """Not a scenario: the driver runs it first, until the worker answers."""
    return k.get(k.t.ident.delay(1))


# -- the suite's scenarios (tests/integration/test_canvas_scenarios.py) --
@scenario()
def chain_passes_results(k: Kit) -> Any:
    t = k.t
    result = (t.add.s(2, 2) | t.add.s(4) | t.add.s(8)).apply_async()
    return {"get": k.get(result), "parent": k.get(result.parent)}


@scenario()
def chain_with_si(k: Kit) -> Any:
    return k.get(k.chain(k.t.add.s(1, 1), k.t.mul.si(3, 3)).apply_async())


@scenario()
def group_in_order(k: Kit) -> Any:
    result = k.group(k.t.add.s(i, i) for i in range(10)).apply_async()
    value = k.get(result)
    return {
        "type": kind(result),
        "get": value,
        "ready/successful/failed": [result.ready(), result.successful(), result.failed()],
        "completed_count": result.completed_count(),
    }


@scenario()
def group_restore_unsaved(k: Kit) -> Any:
    """The suite restores a group it never saved: Celery only restores a saved one."""
    result = k.group(k.t.add.s(i, i) for i in range(3)).apply_async()
    k.get(result)
    restored = k.GroupResult.restore(result.id, app=k.app)
    return None if restored is None else k.get(restored)


@scenario()
def group_restore_saved(k: Kit) -> Any:
    result = k.group(k.t.add.s(i, i) for i in range(3)).apply_async()
    result.save()
    k.get(result)
    restored = k.GroupResult.restore(result.id, app=k.app)
    if restored is None:
        return None
    return {
        "get": k.get(restored),
        "same children": [r.id for r in restored.children] == [r.id for r in result.children],
    }


@scenario()
def chord_sum(k: Kit) -> Any:
    return k.get(k.chord(k.t.add.s(i, i) for i in range(10))(k.t.tsum.s()))


@scenario()
def chord_empty_header(k: Kit) -> Any:
    return k.get(k.chord([], k.t.tsum.s()).apply_async())


@scenario()
def chunks(k: Kit) -> Any:
    return k.get(k.t.add.chunks(list(zip(range(10), range(10), strict=True)), 3).apply_async())


@scenario()
def map_and_starmap(k: Kit) -> Any:
    return {
        "map": k.get(k.t.ident.map([1, 2, 3]).delay()),
        "starmap": k.get(k.t.add.starmap([(1, 2), (3, 4)]).delay()),
    }


@scenario()
def async_tasks_in_a_chord(k: Kit) -> Any:
    t = k.t
    return k.get(k.chord([t.aadd.s(1, 1), t.aadd.s(2, 2) | t.aadd.s(1)], t.tsum.s()).apply_async())


@scenario()
def group_in_chain(k: Kit) -> Any:
    t = k.t
    return k.get((t.add.s(1, 1) | k.group(t.add.s(1), t.add.s(2)) | t.tsum.s()).apply_async())


@scenario()
def chain_ending_in_group(k: Kit) -> Any:
    t = k.t
    result = (t.add.s(1, 1) | k.group(t.add.s(1), t.add.s(2))).apply_async()
    return {"type": kind(result), "get": k.get(result)}


@scenario()
def chain_in_group(k: Kit) -> Any:
    t = k.t
    return k.get(k.group(t.add.s(1, 1) | t.add.s(1), t.add.s(5, 5)).apply_async())


@scenario()
def chord_in_chain(k: Kit) -> Any:
    t = k.t
    flow = t.add.s(1, 1) | k.chord([t.add.s(1), t.add.s(2)], t.tsum.s()) | t.add.s(100)
    return k.get(flow.apply_async())


@scenario()
def chord_header_chains_chords_groups(k: Kit) -> Any:
    t = k.t
    header = [
        t.add.s(1, 1) | t.add.s(1),
        k.chord([t.add.s(1, 1), t.add.s(2, 2)], t.tsum.s()),
        k.chord([t.add.s(1, 1), k.chord([t.add.s(1, 0), t.add.s(1, 1)], t.tsum.s())], t.tsum.s()),
        k.group(t.add.s(1, 1), t.add.s(1, 0)),
    ]
    return k.get(k.chord(header, t.ident.s()).apply_async())


@scenario()
def chord_header_chain_ending_in_group(k: Kit) -> Any:
    t = k.t
    header = [t.add.s(1, 1) | k.group(t.add.s(1), t.add.s(2)), t.add.s(0, 5)]
    return k.get(k.chord(header, t.ident.s()).apply_async())


@scenario()
def chain_of_groups(k: Kit) -> Any:
    t = k.t
    result = (k.group(t.add.s(1, 1), t.add.s(2, 2)) | k.group(t.tsum.s(), t.tsum.s())).apply_async()
    return {"type": kind(result), "get": k.get(result)}


@scenario()
def chord_chain_body(k: Kit) -> Any:
    t = k.t
    return k.get(k.chord([t.add.s(1, 1), t.add.s(2, 2)], t.tsum.s() | t.mul.s(10)).apply_async())


@scenario()
def chord_group_body(k: Kit) -> Any:
    t = k.t
    body = k.group(t.tsum.s(), t.ident.s())
    return k.get(k.chord([t.add.s(1, 1), t.add.s(2, 2)], body).apply_async())


@scenario()
def chain_failure_in_the_middle(k: Kit) -> Any:
    t = k.t
    tag = k.tag()
    flow = t.add.s(1, 1) | t.fail.s() | t.add.s(1)
    flow.link_error(t.on_error.s(tag))
    result = flow.apply_async()
    got = k.attempt(lambda: k.get(result))
    failed = result.parent
    errback_ids = k.settle(lambda: k.notes(tag), [failed.id])
    return {
        "get": got,
        "last state": result.state,
        "failing state": failed.state,
        "first": k.attempt(lambda: k.get(failed.parent)),
        "errback calls": len(errback_ids),
        "errback got": ["failing id" if i == failed.id else normalize(i) for i in errback_ids],
    }


@scenario()
def chord_member_failure(k: Kit) -> Any:
    t = k.t
    tag = k.tag()
    body = t.counted_sum.s(tag)
    body.link_error(t.on_error.s(f"{tag}-err"))
    result = k.chord([t.add.s(1, 1), t.fail.s(), t.add.s(2, 2)], body).apply_async()
    got = k.attempt(lambda: k.get(result))
    errback_ids = k.settle(lambda: k.notes(f"{tag}-err"), [result.id])
    return {
        "get": got,
        "state": result.state,
        "stored result": k.attempt(lambda: stored(result)),
        "errback got": ["body id" if i == result.id else normalize(i) for i in errback_ids],
        "body runs": k.runs(f"runs:{tag}"),
    }


@scenario()
def nested_chord_failure(k: Kit) -> Any:
    t = k.t
    inner = k.chord([t.add.s(1, 1), t.add.s(1) | t.fail.s()], t.tsum.s())
    flow = t.add.s(0, 1) | k.chord([inner, t.add.s(3)], t.tsum.s()) | t.add.s(1)
    return k.attempt(lambda: k.get(flow.apply_async()))


@scenario()
def nested_chord_failure_as_meant(k: Kit) -> Any:
    """The suite's nested failure, with ``si`` where the chain's value would break ``add``."""
    t = k.t
    inner = k.chord([t.add.si(1, 1), t.add.s(1) | t.fail.s()], t.tsum.s())
    flow = t.add.s(0, 1) | k.chord([inner, t.add.s(3)], t.tsum.s()) | t.add.s(1)
    result = flow.apply_async()
    got = k.attempt(lambda: k.get(result))
    return {"get": got, "last state": result.state}


@scenario()
def chord_header_retries(k: Kit) -> Any:
    t = k.t
    tag = k.tag()
    result = k.chord([t.flaky.s(i, tag) for i in range(5)], t.counted_sum.s(f"{tag}-body"))()
    return {
        "get": k.get(result),
        "member runs": [k.runs(f"runs:{tag}:{i}") for i in range(5)],
        "body runs": k.settle(lambda: k.runs(f"runs:{tag}-body"), 1),
    }


@scenario(budget=40.0)
def chord_of_a_thousand(k: Kit) -> Any:
    t = k.t
    tag = k.tag()
    result = k.chord((t.add.s(i, 0) for i in range(1000)), t.counted_sum.s(tag)).apply_async()
    return {"get": k.get(result), "body runs": k.settle(lambda: k.runs(f"runs:{tag}"), 1)}


@scenario()
def replace_alone(k: Kit) -> Any:
    return k.get(k.t.replacer.delay(3))


@scenario()
def replace_in_chain(k: Kit) -> Any:
    return k.get((k.t.replacer.s(3) | k.t.add.s(10)).apply_async())


@scenario()
def replace_in_chord(k: Kit) -> Any:
    t = k.t
    return k.get(k.chord([t.replacer.s(1), t.add.s(1, 1)], t.tsum.s()).apply_async())


@scenario()
def root_and_parent_ids(k: Kit) -> Any:
    t = k.t
    result = (t.whoami.s() | t.whoami.s() | t.whoami.s()).apply_async()
    third = k.get(result)
    second = k.get(result.parent)
    first = k.get(result.parent.parent)
    return {
        "first is root, no parent": [first["root_id"] == first["id"], first["parent_id"]],
        "second: root, parent": [
            second["root_id"] == first["id"],
            second["parent_id"] == first["id"],
        ],
        "third: root, parent": [
            third["root_id"] == first["id"],
            third["parent_id"] == second["id"],
        ],
        "returned id is the handle's": [
            third["id"] == result.id,
            first["id"] == result.parent.parent.id,
        ],
    }


@scenario()
def chord_members_share_root(k: Kit) -> Any:
    t = k.t
    result = k.chord([t.whoami.s(), t.whoami.s()], t.ident.s()).apply_async()
    members = k.get(result)
    return {
        "distinct root ids": len({m["root_id"] for m in members}),
        "each member is its own root": [m["root_id"] == m["id"] for m in members],
        "members' parent": sorted(str(m["parent_id"]) for m in members),
    }


@scenario()
def children_and_collect(k: Kit) -> Any:
    t = k.t
    result = (t.add.s(1, 1) | t.add.s(1) | t.add.s(1)).apply_async()
    value = k.get(result)
    first = result.parent.parent
    return {
        "get": value,
        "collect": k.attempt(lambda: [v for _, v in first.collect()]),
        "children are the next step": k.attempt(
            lambda: [c.id for c in first.children] == [result.parent.id]
        ),
    }


@scenario()
def signature_dict_roundtrip(k: Kit) -> Any:
    t = k.t
    flow = t.add.s(1, 1) | k.chord([t.add.s(1), t.add.s(2) | t.add.s(3)], t.tsum.s())
    data = json.loads(json.dumps(k.to_dict(flow)))
    rebuilt = k.from_dict(data)
    return {
        "isinstance chain": isinstance(rebuilt, k.chain),
        "rebuilt == flow": rebuilt == flow,
        "dict survives a second trip": json.loads(json.dumps(k.to_dict(rebuilt))) == data,
        "get": k.get(rebuilt.apply_async()),
    }


# -- what a Celery user tries next --
@scenario()
def deep_nested_chains(k: Kit) -> Any:
    t = k.t
    flow = (t.add.s(1, 1) | t.add.s(1)) | (t.add.s(1) | (t.add.s(1) | (t.add.s(1) | t.mul.s(2))))
    return k.get(flow.apply_async())


@scenario()
def chord_of_chords_of_chains(k: Kit) -> Any:
    t = k.t
    left = k.chord([t.add.s(1, 1) | t.add.s(1), t.add.s(2, 2) | t.add.s(2)], t.tsum.s())
    right = k.chord([t.add.s(3, 3) | t.add.s(3)], t.tsum.s())
    return k.get(k.chord([left, right], t.tsum.s()).apply_async())


@scenario()
def chord_body_is_a_chord(k: Kit) -> Any:
    t = k.t
    body = k.chord([t.tsum.s(), t.tsum.s()], t.tsum.s())
    return k.get(k.chord([t.add.s(1, 1), t.add.s(2, 2)], body).apply_async())


@scenario()
def group_then_chord(k: Kit) -> Any:
    t = k.t
    flow = k.group(t.add.s(1, 1), t.add.s(2, 2)) | k.chord([t.tsum.s(), t.tsum.s()], t.tsum.s())
    return k.get(flow.apply_async())


@scenario()
def group_of_chords_in_chain(k: Kit) -> Any:
    t = k.t
    fan = k.group(
        k.chord([t.add.s(1), t.add.s(2)], t.tsum.s()),
        k.chord([t.mul.s(2), t.mul.s(3)], t.tsum.s()),
    )
    return k.get((t.add.s(1, 1) | fan | t.tsum.s()).apply_async())


@scenario()
def single_task_group_in_chain(k: Kit) -> Any:
    """A one-member group: is it a group (the next task gets ``[3]``) or the task itself?"""
    t = k.t
    return k.attempt(
        lambda: k.get((t.add.s(1, 1) | k.group(t.add.s(1)) | t.ident.s()).apply_async())
    )


@scenario()
def empty_group(k: Kit) -> Any:
    return {
        "group([])": k.attempt(lambda: k.get(k.group([]).apply_async())),
        "group([], app=app)": k.attempt(lambda: k.get(k.group([], app=k.app).apply_async())),
    }


@scenario()
def si_in_the_middle(k: Kit) -> Any:
    t = k.t
    return k.get((t.add.s(1, 1) | t.mul.si(5, 5) | t.add.s(1)).apply_async())


@scenario()
def partial_args_and_kwargs(k: Kit) -> Any:
    t = k.t
    return {
        "sub.s(10).delay(3)": k.get(t.sub.s(10).delay(3)),
        "sub.s(y=1).delay(5)": k.get(t.sub.s(y=1).delay(5)),
        "sub.s(x=10).delay(y=3)": k.get(t.sub.s(x=10).delay(y=3)),
        "add(1,1) | sub.s(y=10)": k.get((t.add.s(1, 1) | t.sub.s(y=10)).apply_async()),
        "add(1,1) | sub.s(10)": k.get((t.add.s(1, 1) | t.sub.s(10)).apply_async()),
        "(sub.s(1) | mul.s(3)).apply_async((10,))": k.get(
            (t.sub.s(1) | t.mul.s(3)).apply_async((10,))
        ),
    }


@scenario()
def chain_link_and_link_error(k: Kit) -> Any:
    t = k.t
    ok, bad = k.tag(), k.tag()
    good = t.add.s(1, 1) | t.add.s(2)
    good.link(t.record.s(ok))
    value = k.get(good.apply_async())
    failing = t.add.s(1, 1) | t.fail.s() | t.add.s(2)
    failing.link(t.record.s(ok + "-never"))
    failing.link_error(t.on_error.s(bad))
    failed = failing.apply_async()
    got = k.attempt(lambda: k.get(failed))
    return {
        "get": value,
        "link got": k.settle(lambda: k.notes(ok), ["4"]),
        "failing get": got,
        "errback calls": len(k.settle(lambda: k.notes(bad), ["x"], wait=1.5)),
        "link on failing chain": k.notes(ok + "-never"),
    }


@scenario()
def documented_errback_signature(k: Kit) -> Any:
    """Celery's docs write an errback as ``(request, exc, traceback)``."""
    t = k.t
    result = t.fail.apply_async((7,), link_error=t.on_error_doc.s())
    got = k.attempt(lambda: k.get(result))
    seen = k.settle(lambda: k.notes("doc-errback"), ["x"], wait=1.5)
    return {
        "get": got,
        "errback got": [
            s.replace(result.id, "failing id") if result.id in s else normalize(s) for s in seen
        ],
    }


@scenario()
def chord_body_fails(k: Kit) -> Any:
    t = k.t
    return k.attempt(
        lambda: k.get(k.chord([t.add.s(1, 1), t.add.s(2, 2)], t.fail.s()).apply_async())
    )


@scenario()
def chord_immutable_body(k: Kit) -> Any:
    t = k.t
    return k.get(k.chord([t.add.s(1, 1)], t.ident.si("done")).apply_async())


@scenario()
def get_propagate_false(k: Kit) -> Any:
    result = k.t.fail.delay(1)
    value = k.get(result, propagate=False)
    return {"value": kind(value) + ": " + str(value), "state": result.state}


@scenario()
def chain_of_chords(k: Kit) -> Any:
    t = k.t
    flow = k.chord([t.add.s(1, 1), t.add.s(2, 2)], t.tsum.s()) | k.chord(
        [t.add.s(1), t.mul.s(2)], t.tsum.s()
    )
    return k.get(flow.apply_async())


@scenario()
def chord_of_groups_of_chains(k: Kit) -> Any:
    t = k.t
    header = [
        k.group(t.add.s(1, 1) | t.mul.s(10), t.add.s(2, 2) | t.mul.s(10)),
        k.group(t.add.s(0, 1)),
    ]
    return k.get(k.chord(header, t.ident.s()).apply_async())


@scenario()
def replace_inside_chord_inside_chain(k: Kit) -> Any:
    """A replaced task in a chain in a chord header, the chord itself in a chain."""
    t = k.t
    flow = k.chord([t.add.s(1, 1) | t.replacer.s(), t.replacer.s(0)], t.tsum.s()) | t.add.s(1)
    return k.get(flow.apply_async())
