"""AMQP URL parsing and the delay grid: pure functions, no broker."""

from __future__ import annotations

import ssl

import pytest

from celeriac.errors import ImproperlyConfigured
from celeriac.transports.amqp.delay import LONGEST_MS, delay_queue_arguments, ttl_bucket
from celeriac.transports.amqp.url import parse_amqp_urls


@pytest.mark.parametrize(
    ("url", "vhost"),
    [
        ("amqp://u:p@h:5672//", "/"),
        ("amqp://u:p@h:5672/", "/"),
        ("amqp://u:p@h:5672", "/"),
        ("amqp://u:p@h:5672/shop", "shop"),
        ("amqp://u:p@h:5672/a%2Fb", "a/b"),
    ],
)
def test_vhost_forms(url: str, vhost: str) -> None:
    [target] = parse_amqp_urls(url)
    assert target.virtualhost == vhost


def test_defaults_failover_order_and_options() -> None:
    first, second = parse_amqp_urls(
        "amqp://a.example;amqps://u:p@b.example/v?heartbeat=5", {"connect_timeout": 3}
    )
    assert (first.host, first.port, first.login, first.password) == (
        "a.example",
        5672,
        "guest",
        "guest",
    )
    assert (second.scheme, second.port, second.heartbeat) == ("amqps", 5671, 5)
    assert first.connect_timeout == second.connect_timeout == 3.0
    assert second.ssl_context is None  # amqps without options: aiormq's default context


def test_passwords_stay_out_of_repr_and_display() -> None:
    [target] = parse_amqp_urls("amqp://user:pa%40ss-word@h/v")
    assert target.password == "pa@ss-word"
    assert "pa@ss" not in repr(target) and "pa%40ss" not in repr(target)
    assert target.display == "amqp://user:***@h:5672/v"
    assert target.scrub("failed for pa@ss-word and pa%40ss-word") == "failed for *** and ***"


def test_tls_options_turn_tls_on_with_verification() -> None:
    [target] = parse_amqp_urls("amqp://h/", {"ssl": {"cert_reqs": "CERT_NONE"}})
    assert target.scheme == "amqps"
    assert target.ssl_context is not None
    assert target.ssl_context.verify_mode == ssl.CERT_NONE
    [strict] = parse_amqp_urls("amqps://h/", {"ssl_options": {"cert_reqs": "required"}})
    assert strict.ssl_context is not None and strict.ssl_context.check_hostname


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("redis://h/", {}),
        ("amqp://h/", {"heartbeat": "often"}),
        ("amqp://h/", {"ssl": {"cert_reqs": "maybe"}}),
        ("amqp://h/", {"ssl": {"ca_cert": "typo.pem"}}),
        ("", {}),
    ],
)
def test_bad_urls_and_options_fail_at_start_up(url: str, options: dict[str, object]) -> None:
    with pytest.raises(ImproperlyConfigured):
        parse_amqp_urls(url, options)


def test_delay_grid_rounds_short_delays_up_and_long_ones_down() -> None:
    for seconds in (0.001, 0.3, 1.5, 30.0, 60.0):
        ttl, exact = ttl_bucket(seconds)
        assert exact and ttl >= seconds * 1000 and ttl - seconds * 1000 <= 1000
    for seconds in (600.0, 86400.0):
        ttl, exact = ttl_bucket(seconds)
        assert not exact and ttl <= seconds * 1000 and seconds * 1000 - ttl < seconds * 1000 / 64
    assert ttl_bucket(10**9) == (LONGEST_MS, False)
    # retries with jitter share queues: 300 distinct delays within 10 s, about 10 TTLs
    assert len({ttl_bucket(100 + (i * 7919 % 1000) / 100)[0] for i in range(300)}) <= 11


def test_delay_queue_outlives_its_messages() -> None:
    args = delay_queue_arguments("orders", 5000)
    assert args["x-message-ttl"] == 5000
    assert args["x-dead-letter-exchange"] == "orders"
    assert args["x-expires"] > 5000 + 60_000  # longer than a publish after the last declare
