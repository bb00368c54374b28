"""The broker and result URLs a Celery project has, in kombu's spellings: ``pyamqp://`` and
``sentinel://``. Parsing only; the round trips are in tests/integration (test_rpc_backend.py for
``pyamqp://``, test_sentinel.py for a real Sentinel)."""

from __future__ import annotations

import pytest

from celeriac import Celeriac
from celeriac.errors import ImproperlyConfigured
from celeriac.results.registry import backend_class
from celeriac.transports.amqp.url import parse_amqp_urls
from celeriac.transports.redis.url import parse_sentinel_url, sentinel_manager
from celeriac.transports.registry import check_transport_url, transport_class

KOMBU_SENTINEL = "sentinel://:pw-1@s1:26379;sentinel://s2:26380;sentinel://s3"


@pytest.mark.parametrize(
    ("url", "transport"),
    [
        ("pyamqp://guest:guest@127.0.0.1:5672//", "AMQPTransport"),
        ("amqp://guest:guest@127.0.0.1:5672//", "AMQPTransport"),
        (KOMBU_SENTINEL, "RedisTransport"),
        ("redis+sentinel://s1:26379", "RedisTransport"),
    ],
)
def test_kombus_schemes_name_the_same_brokers(url: str, transport: str) -> None:
    check_transport_url(url)
    assert transport_class(url).__name__ == transport


def test_sentinel_results_are_the_redis_backend() -> None:
    assert backend_class(KOMBU_SENTINEL).__name__ == "RedisBackend"


def test_pyamqp_is_amqp_with_its_vhost_failover_and_options() -> None:
    first, second = parse_amqp_urls(
        "pyamqp://u:p@rabbit-a:5673/shop;pyamqp://rabbit-b", {"heartbeat": 9}
    )
    assert (first.scheme, first.host, first.port, first.virtualhost) == (
        "amqp",
        "rabbit-a",
        5673,
        "shop",
    )
    assert (second.host, second.port, second.heartbeat) == ("rabbit-b", 5672, 9)
    assert "p@" not in first.display and first.display.startswith("amqp://u:***@")
    [tls] = parse_amqp_urls("pyamqp://h//", {"ssl": True})
    assert (tls.scheme, tls.port) == ("amqps", 5671)


def test_an_app_accepts_kombus_urls_at_start_up() -> None:
    Celeriac("a", broker="pyamqp://guest:guest@127.0.0.1:5672//", backend="rpc://")
    Celeriac(
        "b",
        broker=KOMBU_SENTINEL,
        broker_transport_options={"master_name": "mymaster"},
        backend="sentinel://s1:26379/1",
    )


def test_kombus_sentinel_form_with_its_transport_options() -> None:
    """kombu's SentinelChannel: the password of the first URL is the master's, each ``;`` part
    one sentinel (default port 26379), ``master_name`` required, ``sentinel_kwargs`` for the
    connections to the sentinels, ``min_other_sentinels`` for redis-py's quorum check."""
    spec = parse_sentinel_url(
        KOMBU_SENTINEL + "/3",
        {
            "master_name": "mymaster",
            "sentinel_kwargs": {"password": "sentinel-pw", "socket_timeout": 0.5},
            "min_other_sentinels": 1,
            "socket_timeout": 2,
            "key_prefix": "ignored:",
        },
    )
    assert spec.sentinels == [("s1", 26379), ("s2", 26380), ("s3", 26379)]
    assert spec.master_name == "mymaster"
    assert spec.connection_kwargs["password"] == "pw-1"
    assert spec.connection_kwargs["db"] == 3
    assert spec.sentinel_kwargs == {"socket_timeout": 0.5, "password": "sentinel-pw"}
    assert spec.min_other_sentinels == 1
    assert "pw" not in repr(spec) and "pw" not in spec.display
    assert spec.display == "master 'mymaster' from the sentinels s1:26379, s2:26380, s3:26379"


def test_sentinel_mistakes_fail_naming_the_option_without_the_password() -> None:
    with pytest.raises(ImproperlyConfigured, match="master_name") as missing:
        parse_sentinel_url(KOMBU_SENTINEL)
    assert "pw-1" not in str(missing.value)
    with pytest.raises(ImproperlyConfigured, match="sentinel_kwargs' must be a mapping"):
        parse_sentinel_url(KOMBU_SENTINEL, {"master_name": "m", "sentinel_kwargs": "pw"})
    with pytest.raises(ImproperlyConfigured, match="min_other_sentinels must be a number"):
        parse_sentinel_url(KOMBU_SENTINEL, {"master_name": "m", "min_other_sentinels": "x"})


def test_the_sentinel_client_takes_the_quorum_and_fails_over_without_backoff() -> None:
    spec = parse_sentinel_url(KOMBU_SENTINEL, {"master_name": "m", "min_other_sentinels": 2})
    for asynchronous in (False, True):
        manager = sentinel_manager(spec, asynchronous=asynchronous)
        assert manager.min_other_sentinels == 2
        assert len(manager.sentinels) == 3
        retry = manager.sentinels[0].connection_pool.connection_kwargs["retry"]
        assert retry._retries == 1  # one at once, not redis-py's 3 with backoff
