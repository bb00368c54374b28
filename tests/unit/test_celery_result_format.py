"""Celery's Redis result records, checked against Celery 5.7's own code, in this process.

No server: Celery's Redis backend names keys, encodes and decodes without connecting, and so
does celeriac's Celery layout. Each test has one side write and the other side read with its
real functions (``decode_result``, ``exception_to_python``, ``result_from_tuple``,
``_get_result_meta``, ``_unpack_chord_result``), so a field Celery reads differently fails here.
Needs ``celery[redis]==5.7.0``, a test-only dependency.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import states
from celeriac.errors import (
    ImproperlyConfigured,
    RemoteError,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    Terminated,
    TimeLimitExceeded,
    WorkerLostError,
)
from celeriac.results.base import ResultMeta, exception_to_dict
from celeriac.results.redis import RedisBackend
from celeriac.results.redis.celery_backend import CeleryLayoutBackend
from celeriac.results.redis.celery_format import (
    celery_key_prefix,
    chord_entry,
    group_ids,
    group_record,
    meta_from_record,
    record_from_meta,
)
from celeriac.results.registry import create_backend

celery = pytest.importorskip("celery", reason="celery[redis]==5.7.0 is a test-only dependency")
from celery import Celery  # type: ignore[import-untyped]  # noqa: E402
from celery.app.task import Context  # type: ignore[import-untyped]  # noqa: E402
from celery.result import GroupResult, result_from_tuple  # type: ignore[import-untyped]  # noqa: E402

URL = "redis://127.0.0.1:6379/9"


@pytest.fixture
def celery_app() -> Iterator[Celery]:
    app = Celery("format", backend=URL, set_as_current=False)
    app.conf.result_extended = True
    yield app
    app.close()


@pytest.fixture
def ours() -> Iterator[CeleryLayoutBackend]:
    made = create_backend(URL, layout="celery")
    assert isinstance(made, CeleryLayoutBackend)
    yield made
    made.close()


def new_id() -> str:
    return str(uuid.uuid4())


# -- choosing the layout -------------------------------------------------------------------------


def test_the_layout_option_picks_the_class_and_the_native_one_stays_the_default() -> None:
    native = create_backend(URL)
    by_query = create_backend(URL + "?layout=celery")
    by_option = RedisBackend(URL, layout="celery")
    try:
        assert type(native) is RedisBackend
        assert native.result_key("x") == "celeriac:result:x"
        assert isinstance(by_query, CeleryLayoutBackend)
        assert isinstance(by_option, CeleryLayoutBackend)
        assert by_option.result_key("x") == "celery-task-meta-x"
    finally:
        for backend in (native, by_query, by_option):
            backend.close()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"layout": "kombu"}, "layout"),
        ({"result_chord_ordered": False}, "result_chord_ordered"),  # Celery's keys only
        ({"layout": "celery", "result_chord_ordered": "sometimes"}, "result_chord_ordered"),
    ],
)
def test_a_bad_layout_option_fails_at_construction_naming_it(
    options: dict[str, Any], named: str
) -> None:
    with pytest.raises(ImproperlyConfigured, match=named) as info:
        create_backend(URL, **options)
    assert "result_backend_transport_options" in str(info.value)


@pytest.mark.parametrize("prefix", [None, "", "app", "app:", "app_", "app-", "app."])
def test_keys_are_named_as_celery_names_them(celery_app: Celery, prefix: str | None) -> None:
    options = {} if prefix is None else {"global_keyprefix": prefix}
    celery_app.conf.result_backend_transport_options = options
    ours = create_backend(URL, layout="celery", **options)
    assert isinstance(ours, CeleryLayoutBackend)
    try:
        theirs = celery_app.backend
        assert ours.result_key("t1").encode() == theirs.get_key_for_task("t1")
        assert ours.ready_channel("t1") == ours.result_key("t1")
        assert ours.group_key("g1").encode() == theirs.get_key_for_group("g1")
        assert ours.group_key("g1", ".j").encode() == theirs.get_key_for_group("g1", ".j")
    finally:
        ours.close()
    assert celery_key_prefix("x") == "x_"


# -- celeriac writes, Celery reads ---------------------------------------------------------------


def test_celery_decodes_a_success_with_its_date_and_children(
    celery_app: Celery, ours: CeleryLayoutBackend
) -> None:
    done = time.time()
    meta = ResultMeta(
        new_id(),
        states.SUCCESS,
        {"total": [1, 2.5, "x"]},
        date_done=done,
        children=["c1", "c2"],
        parent_id="p1",
        group_id="g1",
    )
    got = celery_app.backend.decode_result(ours._encode(meta))
    assert got["status"] == "SUCCESS"
    assert got["result"] == {"total": [1, 2.5, "x"]}
    assert got["task_id"] == meta.task_id
    assert (got["parent_id"], got["group_id"]) == ("p1", "g1")
    assert dt.datetime.fromisoformat(got["date_done"]).timestamp() == pytest.approx(done)
    assert got["date_done"].endswith("+00:00")
    children = [result_from_tuple(c, celery_app).id for c in got["children"]]
    assert children == ["c1", "c2"]
    assert "name" not in got  # not extended: Celery writes all six or none


def test_the_extended_fields_are_written_as_celery_writes_them(
    celery_app: Celery, ours: CeleryLayoutBackend
) -> None:
    request = Context(
        id=new_id(),
        task="t.add",
        args=[2, 3],
        kwargs={"k": 1},
        hostname="w1@host",
        retries=2,
        delivery_info={"routing_key": "q1"},
    )
    celery_record = celery_app.backend._get_result_meta(5, "SUCCESS", None, request)
    meta = ResultMeta(
        request.id,
        states.SUCCESS,
        5,
        date_done=time.time(),
        name="t.add",
        args=[2, 3],
        kwargs={"k": 1},
        worker="w1@host",
        retries=2,
        queue="q1",
    )
    record = record_from_meta(meta)
    assert set(record) == set(celery_record) | {"task_id"}
    for name in ("status", "result", "name", "args", "kwargs", "worker", "retries", "queue"):
        assert record[name] == celery_record[name], name
    assert next(iter(record)) == "status"  # the store script looks for it first


@pytest.mark.parametrize(
    ("exc", "celery_type"),
    [
        (ValueError("bad", 42), "builtins.ValueError"),
        (TaskRevokedError("revoked"), "celery.exceptions.TaskRevokedError"),
        (Terminated("terminated"), "celery.exceptions.TaskRevokedError"),
        (TimeLimitExceeded(30.0), "billiard.exceptions.TimeLimitExceeded"),
        (SoftTimeLimitExceeded(), "billiard.exceptions.SoftTimeLimitExceeded"),
        (WorkerLostError("died"), "billiard.exceptions.WorkerLostError"),
    ],
)
def test_celery_rebuilds_the_exception_types_it_knows(
    celery_app: Celery, ours: CeleryLayoutBackend, exc: BaseException, celery_type: str
) -> None:
    meta = ResultMeta(new_id(), states.FAILURE, exception_to_dict(exc), traceback="Traceback")
    got = celery_app.backend.decode_result(ours._encode(meta))
    rebuilt = got["result"]
    assert f"{type(rebuilt).__module__}.{type(rebuilt).__qualname__}" == celery_type
    assert rebuilt.args == exc.args
    assert got["traceback"] == "Traceback"


def test_celery_reads_a_saved_group_and_a_chord_entry(
    celery_app: Celery, ours: CeleryLayoutBackend
) -> None:
    ids = [new_id() for _ in range(3)]
    record = json.loads(ours._dumps(group_record("g1", ids)))
    restored = result_from_tuple(record["result"], celery_app)
    assert isinstance(restored, GroupResult)
    assert (restored.id, [r.id for r in restored.results]) == ("g1", ids)

    ok = ResultMeta(ids[0], states.SUCCESS, {"v": 1})
    unpack = celery_app.backend._unpack_chord_result
    decode = celery_app.backend.decode
    assert unpack(ours._dumps(chord_entry(ok)), decode) == {"v": 1}
    failed = ResultMeta(ids[1], states.FAILURE, exception_to_dict(TimeLimitExceeded(5.0)))
    with pytest.raises(celery.exceptions.ChordError, match="TimeLimitExceeded"):
        unpack(ours._dumps(chord_entry(failed)), decode)


# -- Celery writes, celeriac reads ---------------------------------------------------------------


def test_celeriac_reads_what_celery_encodes(celery_app: Celery, ours: CeleryLayoutBackend) -> None:
    request = Context(
        id=new_id(),
        task="t.mul",
        args=[4],
        kwargs={},
        hostname="w2@host",
        retries=1,
        delivery_info={"routing_key": "q2"},
        group="g2",
        parent_id="p2",
    )
    backend = celery_app.backend
    record = backend._get_result_meta({"n": 8}, "SUCCESS", None, request)
    record["task_id"] = request.id
    meta = ours._decode(backend.encode(record))
    assert (meta.task_id, meta.status, meta.result) == (request.id, states.SUCCESS, {"n": 8})
    assert (meta.name, meta.args, meta.kwargs) == ("t.mul", [4], {})
    assert (meta.worker, meta.retries, meta.queue) == ("w2@host", 1, "q2")
    assert (meta.group_id, meta.parent_id) == ("g2", "p2")
    assert meta.date_done == pytest.approx(time.time(), abs=60)
    assert meta.ready


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (KeyError("k"), KeyError),
        (celery.exceptions.TaskRevokedError("revoked"), TaskRevokedError),
        (celery.exceptions.TimeLimitExceeded(3.0), TimeLimitExceeded),
        (celery.exceptions.SoftTimeLimitExceeded(), SoftTimeLimitExceeded),
        (celery.exceptions.WorkerLostError("gone"), WorkerLostError),
        (celery.exceptions.Terminated(9), Terminated),
    ],
)
def test_celery_s_exceptions_come_back_as_celeriac_s(
    celery_app: Celery, ours: CeleryLayoutBackend, exc: BaseException, expected: type
) -> None:
    backend = celery_app.backend
    record = backend._get_result_meta(backend.prepare_exception(exc), "FAILURE", "TB", None)
    record["task_id"] = new_id()
    rebuilt = ours._decode(backend.encode(record)).exception()
    assert type(rebuilt) is expected
    assert rebuilt is not None
    assert rebuilt.args == exc.args


def test_an_exception_of_an_unknown_module_is_a_remote_error(ours: CeleryLayoutBackend) -> None:
    record: dict[str, Any] = {
        "status": "FAILURE",
        "result": {"exc_type": "Boom", "exc_message": ["kaput"], "exc_module": "no.such"},
        "traceback": None,
        "children": [],
        "date_done": "2026-01-02T03:04:05.600000",  # naive: UTC
        "task_id": "t9",
    }
    meta = meta_from_record(record)
    assert isinstance(meta.exception(), RemoteError)
    assert meta.date_done == dt.datetime(2026, 1, 2, 3, 4, 5, 600000, dt.UTC).timestamp()


def test_a_celery_group_with_a_nested_group_and_parents_reads_as_task_ids(
    celery_app: Celery,
) -> None:
    inner = GroupResult("inner", [celery_app.AsyncResult("b"), celery_app.AsyncResult("c")])
    child = celery_app.AsyncResult("a", parent=celery_app.AsyncResult("p"))
    outer = GroupResult("outer", [child, inner, celery_app.AsyncResult("d")])
    record = json.loads(json.dumps({"result": outer.as_tuple()}))
    assert group_ids(record) == ["a", "b", "c", "d"]
    task = record_from_meta(ResultMeta("x", states.SUCCESS, 1, children=["a"]))
    task["children"] = record["result"][1]
    assert meta_from_record(task).children == ["a", "b", "c", "d"]
