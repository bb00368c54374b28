"""The backend contract suite, run again on the Redis backend in Celery's layout
(``layout="celery"``): what ``celeriac.results.base`` promises holds there too.

The tests are :mod:`test_backend_contract`'s own, imported here so that pytest collects them in
this module, where ``case`` is the Celery layout. One is left out and replaced: with no
content-type line in Celery's records, a reader configured for another serializer cannot tell a
disallowed type from a bad record, and fails with ``DecodeError`` (as Celery does) rather than
``ContentDisallowed``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from test_backend_contract import (
    REDIS_RESULTS_URL,
    Case,
    MakeBackend,
    _redis_prefix,
    _redis_teardown,
    backend,
    make_backend,
    test_async_twins,
    test_await_for_wakes_on_a_store,
    test_cancelled_await_for_does_not_hold_up_the_event_loop,
    test_cleanup_removes_only_expired,
    test_expired_counter_restarts,
    test_expired_records_read_as_absent,
    test_failure_from_an_unknown_module_is_a_remote_error,
    test_failure_rebuilds_a_builtin_exception,
    test_failure_rebuilds_an_exception_from_an_imported_module,
    test_forget,
    test_get_many_keeps_the_order,
    test_group_ids_are_saved_and_restored_in_order,
    test_incr_counts,
    test_incr_is_atomic_under_threads,
    test_instances_on_one_store_share_results,
    test_join_chord_counts_each_member_once,
    test_join_chord_lets_exactly_one_member_complete_it,
    test_msgpack_round_trip,
    test_store_and_get_each_state,
    test_store_overwrites,
    test_success_has_no_exception,
    test_success_round_trips_json_values,
    test_unexpired_records_survive,
    test_unknown_id_is_pending,
    test_wait_for_returns_at_once_when_ready,
    test_wait_for_times_out_with_pending,
    test_wait_for_times_out_with_the_latest_state,
    test_wait_for_wakes_when_another_thread_stores,
    test_wait_for_zero_timeout_does_not_block,
)

from celeriac import states
from celeriac.errors import DecodeError
from celeriac.results.base import Backend, ResultMeta
from celeriac.results.redis.celery_backend import CeleryLayoutBackend
from celeriac.results.registry import create_backend
from conftest import require_service

__all__ = [
    "backend",
    "make_backend",
    "test_async_twins",
    "test_await_for_wakes_on_a_store",
    "test_cancelled_await_for_does_not_hold_up_the_event_loop",
    "test_cleanup_removes_only_expired",
    "test_expired_counter_restarts",
    "test_expired_records_read_as_absent",
    "test_failure_from_an_unknown_module_is_a_remote_error",
    "test_failure_rebuilds_a_builtin_exception",
    "test_failure_rebuilds_an_exception_from_an_imported_module",
    "test_forget",
    "test_get_many_keeps_the_order",
    "test_group_ids_are_saved_and_restored_in_order",
    "test_incr_counts",
    "test_incr_is_atomic_under_threads",
    "test_instances_on_one_store_share_results",
    "test_join_chord_counts_each_member_once",
    "test_join_chord_lets_exactly_one_member_complete_it",
    "test_msgpack_round_trip",
    "test_store_and_get_each_state",
    "test_store_overwrites",
    "test_success_has_no_exception",
    "test_success_round_trips_json_values",
    "test_unexpired_records_survive",
    "test_unknown_id_is_pending",
    "test_wait_for_returns_at_once_when_ready",
    "test_wait_for_times_out_with_pending",
    "test_wait_for_times_out_with_the_latest_state",
    "test_wait_for_wakes_when_another_thread_stores",
    "test_wait_for_zero_timeout_does_not_block",
]


def _redis_celery(location: Path, **options: Any) -> Backend:
    require_service("Redis", 6379)
    options.setdefault("key_prefix", _redis_prefix(location))
    made = create_backend(REDIS_RESULTS_URL, layout="celery", **options)
    assert isinstance(made, CeleryLayoutBackend)
    return made


@pytest.fixture(params=[pytest.param("redis-celery", marks=(pytest.mark.redis,))])
def case(request: pytest.FixtureRequest) -> Case:
    return Case(_redis_celery, counts_cleanup=False, teardown=_redis_teardown)


def test_another_serializer_s_record_does_not_decode(make_backend: MakeBackend) -> None:
    writer = make_backend(serializer="msgpack", accept=("msgpack",))
    reader = make_backend(serializer="json", accept=("json",))
    task_id = str(uuid.uuid4())
    writer.store(ResultMeta(task_id=task_id, status=states.SUCCESS, result=1))
    with pytest.raises(DecodeError):
        reader.get_meta(task_id)
    with pytest.raises(DecodeError):
        reader.wait_for(task_id, timeout=1)
