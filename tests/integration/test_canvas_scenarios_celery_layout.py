"""The canvas scenario suite again, with results in Celery's layout (``layout="celery"``).

:mod:`test_canvas_scenarios`' scenarios that take the ``env`` fixture, imported here so that
pytest collects them in this module, where ``env`` is a Redis broker (native layout) and Redis
results in Celery's keys and records: every primitive and nesting, failures, retries, redelivered
chord members and a 1,000-member chord work the same when results are Celery's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from apps.canvas_tasks import Tasks, declare
from test_canvas_scenarios import (
    REDIS_URL,
    test_a_body_that_cannot_be_sent_fails_instead_of_hanging,
    test_a_member_redelivered_after_its_worker_died_mid_join_sends_the_body,
    test_a_one_task_group_in_a_chain_is_that_task,
    test_a_redelivered_header_task_is_not_counted_twice,
    test_a_thousand_member_chord_runs_its_body_once,
    test_a_workflow_sent_twice_runs_twice,
    test_an_errback_taking_request_exc_traceback_is_called_in_the_worker,
    test_an_expired_member_or_step_ends_its_workflow,
    test_async_tasks_in_a_workflow,
    test_chain_ending_in_a_group_returns_the_group,
    test_chain_inside_a_group,
    test_chain_of_groups,
    test_chain_passes_each_result_on,
    test_children_and_collect,
    test_chord_inside_a_chain,
    test_chord_passes_the_header_results_to_the_body,
    test_chord_whose_header_holds_chains_chords_and_groups,
    test_chord_with_a_chain_body_and_a_group_body,
    test_chunks_map_and_starmap,
    test_deeper_nestings,
    test_failing_chord_member_fails_the_body_with_chord_error,
    test_failure_in_the_middle_of_a_chain,
    test_failure_inside_a_nested_chord_reaches_the_outermost_result,
    test_group_inside_a_chain_is_a_chord,
    test_group_results_in_order_and_restorable,
    test_header_chain_ending_in_a_group_gives_one_list,
    test_link_options_of_a_chain_and_a_chord,
    test_replace_swaps_a_task_for_a_workflow,
    test_retries_inside_a_chord_header_run_the_body_once,
    test_retry_with_headers_and_a_bare_retry,
    test_root_and_parent_ids_on_every_message,
    test_signatures_travel_as_dicts,
)

from celeriac import Celeriac
from celeriac.results.redis.celery_backend import CeleryLayoutBackend
from celeriac.testing import worker_thread
from conftest import delete_redis_keys, require_service

pytestmark = pytest.mark.redis

__all__ = [
    "test_a_body_that_cannot_be_sent_fails_instead_of_hanging",
    "test_a_member_redelivered_after_its_worker_died_mid_join_sends_the_body",
    "test_a_one_task_group_in_a_chain_is_that_task",
    "test_a_redelivered_header_task_is_not_counted_twice",
    "test_a_thousand_member_chord_runs_its_body_once",
    "test_a_workflow_sent_twice_runs_twice",
    "test_an_errback_taking_request_exc_traceback_is_called_in_the_worker",
    "test_an_expired_member_or_step_ends_its_workflow",
    "test_async_tasks_in_a_workflow",
    "test_chain_ending_in_a_group_returns_the_group",
    "test_chain_inside_a_group",
    "test_chain_of_groups",
    "test_chain_passes_each_result_on",
    "test_children_and_collect",
    "test_chord_inside_a_chain",
    "test_chord_passes_the_header_results_to_the_body",
    "test_chord_whose_header_holds_chains_chords_and_groups",
    "test_chord_with_a_chain_body_and_a_group_body",
    "test_chunks_map_and_starmap",
    "test_deeper_nestings",
    "test_failing_chord_member_fails_the_body_with_chord_error",
    "test_failure_in_the_middle_of_a_chain",
    "test_failure_inside_a_nested_chord_reaches_the_outermost_result",
    "test_group_inside_a_chain_is_a_chord",
    "test_group_results_in_order_and_restorable",
    "test_header_chain_ending_in_a_group_gives_one_list",
    "test_link_options_of_a_chain_and_a_chord",
    "test_replace_swaps_a_task_for_a_workflow",
    "test_retries_inside_a_chord_header_run_the_body_once",
    "test_retry_with_headers_and_a_bare_retry",
    "test_root_and_parent_ids_on_every_message",
    "test_signatures_travel_as_dicts",
]


@pytest.fixture
def env() -> Iterator[tuple[Celeriac, Tasks]]:
    require_service("Redis", 6379)
    prefix = f"canvas-celery-{uuid.uuid4().hex[:10]}:"
    app = Celeriac(
        "canvas",
        broker=REDIS_URL,
        backend=REDIS_URL,
        broker_transport_options={"key_prefix": prefix},
        result_backend_transport_options={"layout": "celery", "global_keyprefix": prefix},
    )
    assert isinstance(app.backend, CeleryLayoutBackend)
    tasks = declare(app)
    try:
        with worker_thread(app, concurrency=4):
            yield app, tasks
    finally:
        app.close()
        delete_redis_keys(REDIS_URL, prefix)
