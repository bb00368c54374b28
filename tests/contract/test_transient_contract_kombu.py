"""The transient fan-out suite (events, remote control) on the Redis broker in kombu's layout:
the layout changes where tasks are kept, not events and control messages, which already
travel on kombu's channels and lists in both layouts. The tests are
:mod:`test_transient_contract`'s own, run here with ``case`` the kombu layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import test_transport_contract as suite
from test_transient_contract import (
    names,
    test_a_direct_exchange_reaches_the_listeners_of_its_key,
    test_a_slow_listener_keeps_the_newest_and_counts_the_dropped,
    test_closing_a_listener_leaves_nothing,
    test_fanout_reaches_every_listener,
    test_listeners_on_two_loops_of_one_transport,
    test_topic_patterns_match_as_in_amqp,
    test_what_nobody_hears_is_gone,
)
from test_transport_contract import REDIS_URL, Case, _cleanup_redis, _redis_prefix

from celeriac.transports.base import Transport
from celeriac.transports.redis import RedisTransport
from celeriac.transports.redis.kombu_transport import KombuRedisTransport
from conftest import require_service

make_transport = suite.make_transport
transport = suite.transport

__all__ = [
    "make_transport",
    "names",
    "test_a_direct_exchange_reaches_the_listeners_of_its_key",
    "test_a_slow_listener_keeps_the_newest_and_counts_the_dropped",
    "test_closing_a_listener_leaves_nothing",
    "test_fanout_reaches_every_listener",
    "test_listeners_on_two_loops_of_one_transport",
    "test_topic_patterns_match_as_in_amqp",
    "test_what_nobody_hears_is_gone",
    "transport",
]


def _make_kombu(tmp_path: Path, name: str, options: dict[str, Any]) -> Transport:
    require_service("Redis", 6379)
    made = RedisTransport(
        REDIS_URL, layout="kombu", global_keyprefix=_redis_prefix(name), **options
    )
    assert isinstance(made, KombuRedisTransport)
    return made


def _no_raw(transport: Transport, queue: str, payload: bytes) -> None:
    raise AssertionError("not used by the transient suite")


@pytest.fixture(params=[pytest.param("redis-kombu", marks=(pytest.mark.redis,))])
def case(request: pytest.FixtureRequest) -> Case:
    return Case(_make_kombu, _no_raw, (pytest.mark.redis,), _cleanup_redis)


@pytest.fixture
def broker() -> str:
    """The suite's name for what is left behind: Redis's (no key, no subscriber)."""
    return "redis"
