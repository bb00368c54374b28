"""Topic matching against an independent oracle, exchange routing laws, and task routers."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from celeriac.errors import ImproperlyConfigured
from celeriac.routing import (
    DEFAULT_EXCHANGE,
    Binding,
    Exchange,
    Queue,
    Route,
    Router,
    route,
    topic_matches,
)

# --- the oracle ---------------------------------------------------------------------------------


def split(text: str) -> list[str]:
    """AMQP words: the empty key has none; ``"a..b"`` has an empty middle word."""
    return text.split(".") if text else []


def oracle(pattern: str, key: str) -> bool:
    """Brute force: replace each ``#`` by 0..n ``*`` and compare word by word, equal lengths only.

    Exponential in the number of ``#``, which is why the strategies keep patterns short; it shares
    nothing with the implementation but the definition of a word.
    """
    pat, words = split(pattern), split(key)
    hashes = [i for i, w in enumerate(pat) if w == "#"]
    for counts in itertools.product(range(len(words) + 1), repeat=len(hashes)):
        expanded: list[str] = []
        for i, w in enumerate(pat):
            expanded.extend(["*"] * counts[hashes.index(i)] if i in hashes else [w])
        if len(expanded) == len(words) and all(
            p == "*" or p == k for p, k in zip(expanded, words, strict=True)
        ):
            return True
    return False


key_words = st.sampled_from(["a", "b", "ab", "", "a*", "x#"])
pattern_words = key_words | st.sampled_from(["*", "#"])
keys = st.lists(key_words, max_size=5).map(".".join)
patterns = st.lists(pattern_words, max_size=4).map(".".join)


def test_oracle_sanity() -> None:
    assert oracle("a.#", "a")
    assert oracle("#.b.#", "a.b.c")
    assert not oracle("a.*", "a")
    assert oracle("", "")
    assert not oracle("*", "")


@given(patterns, keys)
def test_topic_matches_agrees_with_the_oracle(pattern: str, key: str) -> None:
    assert topic_matches(pattern, key) == oracle(pattern, key)


# --- laws ---------------------------------------------------------------------------------------


@given(st.lists(key_words, max_size=6).map(".".join))
def test_a_pattern_without_wildcards_matches_itself(key: str) -> None:
    assert topic_matches(key, key)


@given(keys, keys)
def test_a_pattern_without_wildcards_matches_only_itself(pattern: str, key: str) -> None:
    assert topic_matches(pattern, key) == (pattern == key)


@given(keys)
def test_hash_matches_every_key(key: str) -> None:
    assert topic_matches("#", key)


@given(keys)
def test_star_matches_exactly_the_one_word_keys(key: str) -> None:
    assert topic_matches("*", key) == (len(split(key)) == 1)


@given(patterns, keys)
def test_hash_prefix_and_suffix_are_redundant_when_doubled(pattern: str, key: str) -> None:
    """``#.#`` means the same as ``#``: both swallow any number of words."""
    doubled = ".".join("#.#" if word == "#" else word for word in split(pattern))
    assert topic_matches(doubled, key) == topic_matches(pattern, key)


def test_long_keys_do_not_overflow_the_stack() -> None:
    """Memory, SQLite and Redis impose no 255-byte key limit, so keys can be very long."""
    key = "w." * 5000 + "end"
    assert topic_matches("#.end", key)
    assert topic_matches("#.w.#.end", key)
    assert not topic_matches("#.nope", key)
    assert topic_matches("*." * 5000 + "end", key)


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("orders.eu.*", "orders.eu.paris", True),
        ("orders.eu.*", "orders.eu", False),
        ("orders.eu.*", "orders.eu.paris.17", False),
        ("orders.#", "orders", True),
        ("orders.#", "orders.eu.paris", True),
        ("#.paris", "orders.eu.paris", True),
        ("*.eu.#", "orders.eu", True),
        ("orders.*", "orders.", True),
        ("a*", "ab", False),
        ("", "", True),
        ("", "a", False),
    ],
)
def test_topic_examples(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


# --- route() ------------------------------------------------------------------------------------

queue_names = st.sampled_from(["q1", "q2", "q3", "q4"])
bindings_strategy = st.lists(
    st.builds(Binding, exchange=st.just("ex"), queue=queue_names, routing_key=patterns),
    max_size=8,
)


def expected_route(exchange_type: str, bindings: list[Binding], key: str) -> list[str]:
    hits = [
        b.queue
        for b in bindings
        if exchange_type == "fanout"
        or (exchange_type == "topic" and oracle(b.routing_key, key))
        or (exchange_type == "direct" and b.routing_key == key)
    ]
    return list(dict.fromkeys(hits))


@given(st.sampled_from(["direct", "topic", "fanout"]), bindings_strategy, keys)
def test_route_returns_each_matching_queue_once_in_binding_order(
    exchange_type: str, bindings: list[Binding], key: str
) -> None:
    queues = route(exchange_type, bindings, key)
    assert queues == expected_route(exchange_type, bindings, key)
    assert len(queues) == len(set(queues))


def test_route_examples() -> None:
    bindings = [
        Binding("ex", "eu", "orders.eu.*"),
        Binding("ex", "all", "orders.#"),
        Binding("ex", "eu", "orders.#"),
        Binding("ex", "audit", "#"),
    ]
    assert route("topic", bindings, "orders.eu.paris") == ["eu", "all", "audit"]
    assert route("topic", bindings, "users.new") == ["audit"]
    assert route("topic", bindings[:3], "users.new") == []
    assert route("direct", bindings, "orders.#") == ["all", "eu"]
    assert route("direct", bindings, "orders.eu.paris") == []
    assert route("fanout", bindings, "anything") == ["eu", "all", "audit"]
    assert route("fanout", [], "anything") == []


# --- Queue and Exchange -------------------------------------------------------------------------


def test_queue_bindings() -> None:
    orders = Exchange("orders", "topic")
    extra = (Binding("audit", "eu", "#"), Binding("other", "not-eu", "#"))
    queue = Queue("eu", exchange=orders, routing_key="orders.eu.*", bindings=extra)
    assert queue.all_bindings() == (Binding("orders", "eu", "orders.eu.*"), extra[0])
    assert queue.exchanges() == (orders,)
    assert Queue("plain").all_bindings() == ()
    assert Queue("named", exchange=Exchange("ex")).all_bindings() == (
        Binding("ex", "named", "named"),
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: Exchange("x", "x-delayed-message"),  # type: ignore[arg-type]
        lambda: Queue(""),
        lambda: Queue("q", max_priority=10),
    ],
)
def test_bad_topology_is_a_configuration_error(make: Any) -> None:
    with pytest.raises(ImproperlyConfigured):
        make()


# --- Router -------------------------------------------------------------------------------------

QUEUES = {
    "default": Queue("default"),
    "email": Queue("email"),
    "eu": Queue("eu", exchange=Exchange("orders", "topic"), routing_key="orders.eu.*"),
}


def make_router(routes: Any, create_missing: bool = True) -> Router:
    return Router(routes, QUEUES, default_queue="default", create_missing=create_missing)


def test_no_routes_go_to_the_default_queue() -> None:
    assert make_router(None).route("tasks.add") == Route(
        DEFAULT_EXCHANGE, "default", QUEUES["default"]
    )


def test_dict_exact_glob_and_regex() -> None:
    router = make_router(
        {
            "shop.email.send": "email",
            "shop.*": {"queue": "eu", "priority": 5},
            re.compile(r"^report\.(daily|weekly)$"): {"queue": "reports"},
        }
    )
    assert router.route("shop.email.send").queue == QUEUES["email"]
    eu = router.route("shop.checkout")
    assert (eu.exchange, eu.routing_key, eu.priority) == ("orders", "orders.eu.*", 5)
    reports = router.route("report.daily")
    assert reports.queue == Queue("reports")
    assert (reports.exchange, reports.routing_key) == (DEFAULT_EXCHANGE, "reports")
    assert router.route("report.monthly").queue == QUEUES["default"]
    assert router.route("other").queue == QUEUES["default"]


def test_exact_names_beat_patterns_whatever_their_order() -> None:
    router = make_router({"shop.*": "eu", "shop.email": "email"})
    assert router.route("shop.email").queue == QUEUES["email"]


def test_callable_router_sees_args_kwargs_and_options() -> None:
    seen: list[tuple[Any, ...]] = []

    def by_size(name: str, args: Any, kwargs: Any, options: Any, **_: Any) -> Any:
        seen.append((name, tuple(args), dict(kwargs), dict(options)))
        return "email" if kwargs.get("big") else None

    router = make_router(by_size)
    assert router.route("t", (1,), {"big": True}, {"countdown": 3}).queue == QUEUES["email"]
    assert router.route("t", (), {}).queue == QUEUES["default"]
    assert seen[0] == ("t", (1,), {"big": True}, {"countdown": 3})


def test_list_of_routers_first_answer_wins() -> None:
    calls: list[str] = []

    def never(name: str, *_: Any, **__: Any) -> None:
        calls.append(name)

    router = make_router([never, {"a.*": "email"}, {"a.b": "eu"}, lambda *_: "unreached"])
    assert router.route("a.b").queue == QUEUES["email"]
    assert router.route("z").queue == Queue("unreached")
    assert calls == ["a.b", "z"]


def test_explicit_options_beat_routes() -> None:
    router = make_router({"t": "email"})
    assert router.route("t", options={"queue": "eu"}).queue == QUEUES["eu"]
    by_key = router.route("t", options={"exchange": "ex", "routing_key": "k"})
    assert (by_key.exchange, by_key.routing_key, by_key.queue) == ("ex", "k", None)
    with_exchange_object = router.route("t", options={"exchange": Exchange("fan", "fanout")})
    assert with_exchange_object.exchange == "fan"


def test_priority_option_overrides_without_bypassing_routes() -> None:
    router = make_router({"t": {"queue": "email", "priority": 1}})
    chosen = router.route("t", options={"priority": 9})
    assert (chosen.queue, chosen.priority) == (QUEUES["email"], 9)


def test_none_options_do_not_count_as_explicit() -> None:
    router = make_router({"t": "email"})
    assert router.route("t", options={"queue": None}).queue == QUEUES["email"]


def test_queue_objects_are_accepted_as_route_values() -> None:
    special = Queue("special", exchange=Exchange("sx", "direct"), routing_key="sk")
    chosen = make_router({"t": {"queue": special}}).route("t")
    assert (chosen.exchange, chosen.routing_key, chosen.queue) == ("sx", "sk", special)


def test_unknown_queue_without_create_missing_is_a_configuration_error() -> None:
    router = make_router({"t": "nowhere"}, create_missing=False)
    with pytest.raises(ImproperlyConfigured, match="'nowhere'"):
        router.route("t")
    assert router.route("other").queue == QUEUES["default"]


def test_unknown_queue_with_create_missing_is_created() -> None:
    assert make_router({"t": "fresh"}).route("t").queue == Queue("fresh")


@pytest.mark.parametrize("routes", [[42], {3: "q"}])
def test_bad_routes_setting_is_a_configuration_error(routes: Any) -> None:
    with pytest.raises(ImproperlyConfigured):
        make_router(routes)
