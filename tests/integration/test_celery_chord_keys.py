"""One chord joined by Celery 5.7's worker code and celeriac's Celery layout at once, on Redis.

Celery's side is its own ``RedisBackend.on_chord_part_return`` (the Lua join, the dispatch
claim, the cleanup), called in this process as its worker calls it after storing a member's
result; its body runs eagerly (``task_always_eager``) into a list, so the test sees whether and
with what Celery sent it. celeriac's side is :meth:`CeleryLayoutBackend.join_chord` and the
methods a caller uses to finish a chord (``chord_size``, ``chord_results``, ``finish_chord``).
Members of one chord finish on both sides in every order that decides who completes it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from celeriac import states
from celeriac.results.base import ResultMeta, exception_to_dict
from celeriac.results.redis.celery_backend import CeleryLayoutBackend
from celeriac.results.registry import create_backend
from conftest import delete_redis_keys, require_service

celery = pytest.importorskip("celery", reason="celery[redis]==5.7.0 is a test-only dependency")
from celery import Celery  # type: ignore[import-untyped]  # noqa: E402
from celery.app.task import Context  # type: ignore[import-untyped]  # noqa: E402

pytestmark = [
    pytest.mark.redis,
    # Celery's own code: its Redis backend calls redis-py's deprecated setex, and its chord
    # join warns about reading results under task_always_eager (which runs the body here)
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Results are not stored in backend:RuntimeWarning"),
]

URL = "redis://127.0.0.1:6379/10"


class Chords:
    """A Celery app and a celeriac backend on one prefix, and the bodies Celery ran."""

    def __init__(self, ordered: bool) -> None:
        self.prefix = f"celeriac-chords-{uuid.uuid4().hex[:10]}:"
        options = {"global_keyprefix": self.prefix, "result_chord_ordered": ordered}
        self.app = Celery("chords", broker="memory://", backend=URL, set_as_current=False)
        self.app.conf.result_backend_transport_options = options
        self.app.conf.task_always_eager = True
        self.bodies: list[list[Any]] = []

        # not shared: a shared task would join every Celery app made after this one
        @self.app.task(name="chords.body", shared=False)  # type: ignore[untyped-decorator]
        def body(parts: list[Any]) -> None:
            self.bodies.append(parts)

        backend = create_backend(URL, layout="celery", **options)
        assert isinstance(backend, CeleryLayoutBackend)
        self.ours = backend
        self.admin = redis.Redis.from_url(URL)

    def new_chord(self, size: int, *, by_celery: bool = True) -> tuple[str, list[str]]:
        """A chord's group id and member ids; its size set as Celery's client or celeriac's
        (the group record and ``.s``, through ``save_group``) sets it."""
        group_id = str(uuid.uuid4())
        ids = [str(uuid.uuid4()) for _ in range(size)]
        if by_celery:
            self.app.backend.set_chord_size(group_id, size)
        else:
            self.ours.save_group(group_id, ids)
        return group_id, ids

    def celery_member(self, group_id: str, task_id: str, index: int, value: Any) -> None:
        """What Celery's worker does when a header member succeeds."""
        body = self.app.signature("chords.body", options={"task_id": str(uuid.uuid4())})
        request = Context(
            id=task_id, group=group_id, group_index=index, chord=dict(body), delivery_info={}
        )
        self.app.backend.store_result(task_id, value, states.SUCCESS, request=request)
        self.app.backend.on_chord_part_return(request, states.SUCCESS, value)

    def celeriac_member(
        self, group_id: str, task_id: str, index: int | None, value: Any, status: str = "SUCCESS"
    ) -> tuple[bool, int]:
        """What a celeriac worker does: store the member's record, then join."""
        self.ours.store(ResultMeta(task_id, status, value, group_id=group_id))
        return self.ours.join_chord(group_id, task_id, index=index)

    def key(self, group_id: str, suffix: str) -> str:
        return self.ours.group_key(group_id, suffix)

    def close(self) -> None:
        self.ours.close()
        self.app.close()
        self.admin.close()
        delete_redis_keys(URL, self.prefix)


@pytest.fixture(params=[True, False], ids=["ordered", "unordered"])
def chords(request: pytest.FixtureRequest) -> Iterator[Chords]:
    require_service("Redis", 6379)
    made = Chords(ordered=request.param)
    yield made
    made.close()


def test_a_celery_worker_completes_a_chord_celeriac_members_joined(chords: Chords) -> None:
    group_id, ids = chords.new_chord(4)
    assert chords.celeriac_member(group_id, ids[0], 0, "a") == (True, 1)
    assert chords.celeriac_member(group_id, ids[1], 1, "b") == (True, 2)
    chords.celery_member(group_id, ids[2], 2, "c")
    assert chords.bodies == []
    chords.celery_member(group_id, ids[3], 3, "d")
    assert chords.bodies == [["a", "b", "c", "d"]]  # ordered or in finishing order: the same
    # Celery sent it and cleaned: a late copy of a celeriac member records nothing
    assert chords.admin.get(chords.key(group_id, ".c")) == b"done"
    assert not chords.admin.exists(chords.key(group_id, ".j"), chords.key(group_id, ".s"))
    assert chords.celeriac_member(group_id, ids[0], 0, "a") == (False, 0)
    assert not chords.admin.exists(chords.key(group_id, ".j"))


def test_celeriac_completes_a_chord_celery_members_joined(chords: Chords) -> None:
    group_id, ids = chords.new_chord(4)
    chords.celery_member(group_id, ids[0], 0, "a")
    assert chords.celeriac_member(group_id, ids[1], 1, "b") == (True, 2)
    chords.celery_member(group_id, ids[2], 2, "c")
    assert chords.celeriac_member(group_id, ids[3], 3, "d") == (True, 4)  # claimed
    assert chords.ours.chord_size(group_id) == 4
    results = chords.ours.chord_results(group_id)
    assert results is not None
    assert [(m.task_id, m.status, m.result) for m in results] == [
        (ids[i], states.SUCCESS, v) for i, v in enumerate("abcd")
    ]
    # a redelivered Celery member finds the claim held by celeriac: Celery sends nothing
    chords.celery_member(group_id, ids[2], 2, "c")
    assert chords.bodies == []
    # celeriac's redelivered member still counts the chord complete (its caller's own "sent"
    # mark decides), without counting itself twice
    assert chords.celeriac_member(group_id, ids[3], 3, "d") == (False, 4)
    assert chords.ours.finish_chord(group_id)
    assert chords.admin.get(chords.key(group_id, ".c")) == b"done"
    assert not chords.admin.exists(*(chords.key(group_id, s) for s in (".j", ".s", ".t", ".d")))
    chords.celery_member(group_id, ids[0], 0, "a")  # late: Celery sees "done"
    assert chords.bodies == []
    assert not chords.ours.finish_chord(group_id)  # once


def test_a_member_that_reports_twice_is_counted_once_by_both(chords: Chords) -> None:
    group_id, ids = chords.new_chord(3)
    assert chords.celeriac_member(group_id, ids[0], 0, 1) == (True, 1)
    assert chords.celeriac_member(group_id, ids[0], 0, 1) == (False, 1)
    chords.celery_member(group_id, ids[1], 1, 2)
    chords.celery_member(group_id, ids[1], 1, 2)
    assert chords.ours.chord_results(group_id) is not None
    chords.celery_member(group_id, ids[2], 2, 3)
    assert chords.bodies == [[1, 2, 3]]


def test_celery_completes_a_chord_celeriac_s_client_sent(chords: Chords) -> None:
    """celeriac's client saves the header (group record and ``.s``): Celery's worker reads the
    results through the saved group, in header order."""
    group_id, ids = chords.new_chord(3, by_celery=False)
    assert chords.admin.get(chords.key(group_id, ".s")) == b"3"
    chords.celery_member(group_id, ids[2], 2, "z")
    assert chords.celeriac_member(group_id, ids[0], None, "x") == (True, 2)  # index from record
    chords.celery_member(group_id, ids[1], 1, "y")
    assert chords.bodies == [["x", "y", "z"]]


def test_a_failed_celeriac_member_fails_celery_s_body(chords: Chords) -> None:
    group_id, ids = chords.new_chord(2)
    error = exception_to_dict(ValueError("bad", 42))
    chords.celeriac_member(group_id, ids[0], 0, error, status=states.FAILURE)
    results = chords.ours.chord_results(group_id)
    assert results is not None
    failure = results[0].exception()
    assert isinstance(failure, ValueError)
    assert failure.args == ("bad", 42)
    chords.celery_member(group_id, ids[1], 1, "ok")
    assert chords.bodies == []  # Celery failed the body instead of running it
