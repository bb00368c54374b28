"""kombu's Queue, Exchange, binding and Broadcast in celeriac's settings, read by duck typing.

celeriac does not import kombu. Every check runs on the stand-ins of :mod:`kombu_standins`
(kombu 5.7's class and attribute names and defaults), then on real kombu objects when kombu is
installed (it is in the ``test`` extra), and the two must convert alike.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import kombu_standins
import pytest

from celeriac.errors import ImproperlyConfigured
from celeriac.routing import (
    Binding,
    Broadcast,
    Exchange,
    Queue,
    Router,
    as_exchange,
    as_queue,
    queues_setting,
)

STANDINS = SimpleNamespace(
    Queue=kombu_standins.Queue,
    Exchange=kombu_standins.Exchange,
    binding=kombu_standins.binding,
    Broadcast=kombu_standins.Broadcast,
)


def real_kombu() -> SimpleNamespace:
    kombu = pytest.importorskip("kombu")
    common = pytest.importorskip("kombu.common")
    return SimpleNamespace(
        Queue=kombu.Queue,
        Exchange=kombu.Exchange,
        binding=kombu.binding,
        Broadcast=common.Broadcast,
    )


@pytest.fixture(params=["stand-ins", "kombu"])
def k(request: pytest.FixtureRequest) -> SimpleNamespace:
    """kombu's classes: the stand-ins, then the real ones (skipped without kombu)."""
    return STANDINS if request.param == "stand-ins" else real_kombu()


# --- queues --------------------------------------------------------------------------------------


def test_a_plain_queue(k: SimpleNamespace) -> None:
    assert as_queue(k.Queue("io")) == Queue("io")


def test_exchange_key_and_flags(k: SimpleNamespace) -> None:
    kombu_queue = k.Queue(
        "eu",
        k.Exchange("orders", type="topic", durable=False),
        routing_key="orders.eu.*",
        durable=False,
        auto_delete=True,
    )
    assert as_queue(kombu_queue) == Queue(
        "eu",
        exchange=Exchange("orders", "topic", durable=False),
        routing_key="orders.eu.*",
        durable=False,
        auto_delete=True,
        exclusive=False,  # kombu's auto_delete alone; celeriac's own would be exclusive too
    )


def test_an_exchange_named_by_a_string_is_direct(k: SimpleNamespace) -> None:
    queue = as_queue(k.Queue("q", exchange="ex", routing_key="key"))
    assert (queue.exchange, queue.routing_key) == (Exchange("ex"), "key")


def test_exclusive_implies_auto_delete(k: SimpleNamespace) -> None:
    queue = as_queue(k.Queue("mine", exclusive=True))
    assert (queue.exclusive, queue.auto_delete) == (True, True)


def test_queue_arguments_and_kombus_options_become_amqp_arguments(k: SimpleNamespace) -> None:
    """As kombu declares them: seconds to milliseconds, and the options win over the same key
    in ``queue_arguments``."""
    queue = as_queue(
        k.Queue(
            "tasks",
            k.Exchange("tasks"),
            routing_key="tasks",
            queue_arguments={"x-max-priority": 10, "x-queue-type": "classic", "x-expires": 1},
            expires=30,
            message_ttl=2.5,
            max_length=100,
            max_length_bytes=10_000,
        )
    )
    assert queue.arguments == {
        "x-max-priority": 10,
        "x-queue-type": "classic",
        "x-expires": 30_000,
        "x-message-ttl": 2_500,
        "x-max-length": 100,
        "x-max-length-bytes": 10_000,
    }
    assert queue.max_priority == 9  # celeriac's range tops at 9; RabbitMQ still gets 10


def test_max_priority_sets_the_priority_range(k: SimpleNamespace) -> None:
    assert as_queue(k.Queue("a", queue_arguments={"x-max-priority": 3})).max_priority == 3
    overridden = as_queue(k.Queue("b", queue_arguments={"x-max-priority": 3}, max_priority=5))
    assert (overridden.arguments, overridden.max_priority) == ({"x-max-priority": 5}, 5)
    assert as_queue(k.Queue("c")).max_priority == 9


def test_binding_arguments_on_a_headers_exchange(k: SimpleNamespace) -> None:
    queue = as_queue(
        k.Queue(
            "pdf",
            k.Exchange("by-kind", type="headers"),
            binding_arguments={"x-match": "any", "kind": "pdf"},
        )
    )
    assert queue.all_bindings() == (
        Binding("by-kind", "pdf", "", {"x-match": "any", "kind": "pdf"}),
    )


def test_a_list_of_bindings_declares_their_exchanges(k: SimpleNamespace) -> None:
    headers, topic = k.Exchange("by-kind", type="headers"), k.Exchange("events", type="topic")
    queue = as_queue(
        k.Queue(
            "mixed",
            [
                k.binding(headers, arguments={"x-match": "any", "kind": "pdf"}),
                k.binding(topic, routing_key="user.#"),
            ],
        )
    )
    assert queue.exchange is None
    assert queue.all_bindings() == (
        Binding("by-kind", "mixed", "", {"x-match": "any", "kind": "pdf"}),
        Binding("events", "mixed", "user.#"),
    )
    assert queue.exchanges() == (Exchange("by-kind", "headers"), Exchange("events", "topic"))


def test_no_declare_declares_nothing(k: SimpleNamespace) -> None:
    queue = as_queue(k.Queue("theirs", k.Exchange("their-ex"), routing_key="k", no_declare=True))
    assert queue.no_declare
    assert (queue.exchanges(), queue.all_bindings()) == ((), ())


def test_alias(k: SimpleNamespace) -> None:
    queue = as_queue(k.Queue("long.generated.name", alias="short"))
    router = Router(None, [queue], "celery")
    assert router.queue("short") is router.queues[0]


def test_broadcast(k: SimpleNamespace) -> None:
    kombu_queue = k.Broadcast("reload")
    queue = as_queue(kombu_queue)
    assert isinstance(queue, Broadcast)
    assert queue.name == kombu_queue.name
    assert queue.name.startswith("bcast.")
    assert (queue.alias, queue.exchange, queue.auto_delete) == (
        "reload",
        Exchange("reload", "fanout"),
        True,
    )
    router = Router({"app.reload": {"queue": "reload"}}, [queue], "celery")
    route = router.route("app.reload")
    assert (route.exchange, route.queue) == ("reload", queue)
    assert router.declarations() == ([], [Exchange("reload", "fanout")])


def test_celerys_broadcast_example(k: SimpleNamespace) -> None:
    """The routing guide's example, word for word: the queue named by the exchange's name."""
    router = Router.from_settings(
        SimpleNamespace(
            task_queues=(k.Broadcast("broadcast_tasks"),),
            task_routes={
                "tasks.reload_cache": {"queue": "broadcast_tasks", "exchange": "broadcast_tasks"}
            },
            task_default_queue="celery",
            task_default_exchange="",
            task_default_routing_key=None,
            task_create_missing_queues=True,
        )
    )
    [queue] = router.queues
    route = router.route("tasks.reload_cache")
    assert (route.exchange, route.queue) == ("broadcast_tasks", queue)
    assert router.worker_queues() == [queue]
    assert router.declarations(route.queue) == ([], [Exchange("broadcast_tasks", "fanout")])


# --- in settings and routes ----------------------------------------------------------------------


def test_task_queues_of_kombu_objects_route_as_in_celery(k: SimpleNamespace) -> None:
    media = k.Exchange("media", type="topic")
    router = Router(
        {"video.*": {"queue": "videos"}, "image.*": {"queue": k.Queue("images", media, "image.#")}},
        (k.Queue("default"), k.Queue("videos", media, routing_key="video.#")),
        "default",
    )
    assert router.queues == (
        Queue("default"),
        Queue("videos", exchange=Exchange("media", "topic"), routing_key="video.#"),
    )
    video = router.route("video.compress")
    assert (video.exchange, video.routing_key) == ("media", "video.#")
    image = router.route("image.resize", options={"routing_key": "image.resize"})
    assert (image.exchange, image.routing_key, image.queue) == (
        "media",
        "image.resize",
        Queue("images", exchange=Exchange("media", "topic"), routing_key="image.#"),
    )
    sent = router.route("t", options={"exchange": media, "routing_key": "video.x"})
    assert (sent.exchange, sent.routing_key) == ("media", "video.x")


def test_a_router_may_answer_a_kombu_queue(k: SimpleNamespace) -> None:
    answer = k.Queue("special", k.Exchange("sx", type="topic"), routing_key="s.k")
    route = Router(lambda *_: answer, [], "celery").route("t")
    assert (route.exchange, route.routing_key, route.queue.name if route.queue else None) == (
        "sx",
        "s.k",
        "special",
    )


def test_a_kombu_queue_is_not_mistaken_for_a_router(k: SimpleNamespace) -> None:
    with pytest.raises(ImproperlyConfigured, match="is a queue, not a router"):
        Router([k.Queue("q")], [], "celery")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda k: k.Queue("q", k.Exchange("alt", arguments={"alternate-exchange": "x"})), "alt"),
        (lambda k: k.Queue("q", k.Exchange("delayed", type="x-delayed-message")), "delayed"),
        (lambda k: k.Queue("q", queue_arguments={"x-max-priority": "high"}), "x-max-priority"),
        (lambda k: k.Queue("q", queue_arguments={"x-thing": object()}), "JSON"),
        (lambda k: k.Queue(""), "non-empty name"),
        (lambda k: object(), "not a queue"),
    ],
)
def test_what_cannot_be_carried_over_fails_naming_task_queues(
    k: SimpleNamespace, make: Any, message: str
) -> None:
    with pytest.raises(ImproperlyConfigured, match=f"task_queues.*{message}"):
        queues_setting([make(k)])


def test_exchanges_alone(k: SimpleNamespace) -> None:
    assert as_exchange(k.Exchange("fan", type="fanout"), "x") == Exchange("fan", "fanout")
    assert as_exchange(k.Exchange(""), "x") is None
    assert as_exchange("named", "x") == Exchange("named")


def test_stand_ins_match_kombu() -> None:
    """The stand-ins convert exactly as the real objects do (so the stand-in runs mean
    something where kombu is absent)."""
    real = real_kombu()

    def built(k: SimpleNamespace) -> list[Any]:
        return [
            k.Queue("a"),
            k.Queue("b", k.Exchange("e", type="topic"), "b.#", queue_arguments={"x": 1}),
            k.Queue("c", [k.binding(k.Exchange("h", type="headers"), arguments={"a": 1})]),
            k.Queue("d", exclusive=True, message_ttl=1, max_priority=4),
            k.Broadcast("bc", queue="fixed"),
        ]

    for ours, theirs in zip(built(STANDINS), built(real), strict=True):
        assert as_queue(ours) == as_queue(theirs)
