"""``task_routes`` in every form Celery documents, and where each send goes, as Celery 5.7 sends it.

The expected (exchange, routing key, priority) of the table tests are what Celery 5.7.0 published
for the same settings and sends (observed with ``kombu.Producer.publish`` patched to record its
arguments, in the reference install): celeriac must publish to the same place.
"""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from celeriac.errors import ImproperlyConfigured
from celeriac.routing import DEFAULT_EXCHANGE, Broadcast, Exchange, Queue, Route, Router

QUEUES = [
    Queue("celery"),
    Queue("email"),
    Queue("eu", exchange=Exchange("orders", "topic"), routing_key="orders.eu.*"),
]


def make(routes: Any = None, queues: Any = QUEUES, **options: Any) -> Router:
    return Router(routes, queues, "celery", **options)


def where(route: Route) -> tuple[str, str, str | None]:
    return route.exchange, route.routing_key, route.queue.name if route.queue else None


def settings(**given: Any) -> SimpleNamespace:
    """A settings object with Celery's defaults for what the router reads."""
    values: dict[str, Any] = {
        "task_routes": None,
        "task_queues": None,
        "task_default_queue": "celery",
        "task_default_exchange": "",
        "task_default_exchange_type": "direct",
        "task_default_routing_key": None,
        "task_create_missing_queues": True,
        "task_create_missing_queue_exchange_type": None,
        "task_queue_max_priority": None,
    }
    values.update(given)
    return SimpleNamespace(**values)


# --- the forms of task_routes -------------------------------------------------------------------


def test_a_dict_of_names_globs_and_regexes() -> None:
    router = make(
        {
            "shop.email.send": "email",
            "shop.*": {"queue": "eu", "priority": 5},
            re.compile(r"^report\.(daily|weekly)$"): {"queue": "reports"},
        }
    )
    assert router.route("shop.email.send").queue == QUEUES[1]
    assert where(router.route("shop.checkout")) == ("orders", "orders.eu.*", "eu")
    assert router.route("shop.checkout").priority == 5
    assert where(router.route("report.daily")) == (DEFAULT_EXCHANGE, "reports", "reports")
    assert where(router.route("report.monthly")) == (DEFAULT_EXCHANGE, "celery", "celery")


def test_celerys_ordered_list_of_pairs() -> None:
    """``task_routes = ([(pattern, route), ...],)``: patterns tried in the order written, exact
    names first (Celery's MapRoute)."""
    routes = (
        [
            ("feed.tasks.*", {"queue": "feeds"}),
            ("feed.tasks.special*", {"queue": "never"}),  # after a pattern that matches first
            ("web.tasks.*", {"queue": "web"}),
            (re.compile(r"(video|image)\.tasks\..*"), {"queue": "media"}),
            ("feed.tasks.exact", "email"),  # an exact name beats every pattern
        ],
    )
    router = make(routes)
    assert router.route("feed.tasks.a").queue == Queue("feeds")
    assert router.route("feed.tasks.special_one").queue == Queue("feeds")
    assert router.route("web.tasks.b").queue == Queue("web")
    assert router.route("image.tasks.c").queue == Queue("media")
    assert router.route("feed.tasks.exact").queue == QUEUES[1]
    assert router.route("nope").queue == QUEUES[0]
    assert router.cacheable


def test_pairs_written_without_the_enclosing_list_fail_with_the_fix() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"task_routes.*pair.*task_routes = \(\["):
        make([("feed.tasks.*", {"queue": "feeds"})])


def test_a_list_mixes_dicts_functions_and_pairs_first_answer_wins() -> None:
    asked: list[str] = []

    def passes(name: str, args: Any, kwargs: Any, options: Any, task: Any = None) -> None:
        asked.append(name)

    router = make([passes, {"a.b": "email"}, [("a.*", "eu")], lambda *_: "last"])
    assert router.route("a.b").queue == QUEUES[1]
    assert router.route("a.c").queue == QUEUES[2]
    assert router.route("z").queue == Queue("last")
    assert asked == ["a.b", "a.c", "z"]
    assert not router.cacheable


def test_an_empty_answer_ends_the_search_with_the_defaults() -> None:
    """Celery stops at the first answer that is not None, and an empty one means defaults."""
    router = make([lambda *_: {}, {"t": "email"}])
    assert router.route("t").queue == QUEUES[0]
    router = make([lambda *_: "", {"t": "email"}])
    assert router.route("t").queue == QUEUES[0]


def test_a_router_with_celerys_signature_gets_the_task_and_options() -> None:
    seen: list[tuple[Any, ...]] = []
    task = object()

    def route_task(
        name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any
    ) -> Any:
        seen.append((name, tuple(args), dict(kwargs), dict(options), task, kw))
        return {"queue": "email"} if kwargs.get("big") else None

    router = make((route_task,))
    assert router.route("t", (1,), {"big": True}, {"countdown": 3}, task=task).queue == QUEUES[1]
    assert router.route("t").queue == QUEUES[0]
    assert seen[0] == ("t", (1,), {"big": True}, {"countdown": 3}, task, {})
    assert seen[1][4] is None


def test_a_router_without_a_task_keyword_is_called_without_it() -> None:
    def old(name: str, args: Any, kwargs: Any, options: Any) -> str:
        return "email"

    class Callable:
        def __call__(self, name: str, *rest: Any) -> str:
            return "eu"

    assert make(old).route("t", task=object()).queue == QUEUES[1]
    assert make(Callable()).route("t", task=object()).queue == QUEUES[2]


def test_routers_answer_a_name_a_dict_or_a_queue() -> None:
    special = Queue("special", exchange=Exchange("sx", "topic"), routing_key="s.k")
    answers: dict[str, Any] = {
        "name": "email",
        "dict": {"queue": "eu", "routing_key": "orders.eu.paris"},
        "queue": special,
    }
    router = make(lambda name, *_: answers[name])
    assert where(router.route("name")) == (DEFAULT_EXCHANGE, "email", "email")
    assert where(router.route("dict")) == ("orders", "orders.eu.paris", "eu")
    assert where(router.route("queue")) == ("sx", "s.k", "special")


def test_a_router_answering_nonsense_fails_naming_the_setting() -> None:
    router = make(lambda *_: 42)
    with pytest.raises(ImproperlyConfigured, match=r"task_routes.*42"):
        router.route("t")


class LegacyRouter:
    """Celery's pre-4.0 router class: ``route_for_task(task, args, kwargs)``."""

    def route_for_task(self, task: str, args: Any = None, kwargs: Any = None) -> Any:
        return {"queue": "email"} if task.startswith("mail.") else None


def test_a_route_for_task_router_object_or_class() -> None:
    for router in (make(LegacyRouter()), make([LegacyRouter])):
        assert router.route("mail.send").queue == QUEUES[1]
        assert router.route("other").queue == QUEUES[0]


@pytest.fixture
def routers_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module ``myrouters_<n>`` on sys.path with routers of every kind; its name."""
    name = f"myrouters_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            IMPORTED = True

            def route_task(name, args, kwargs, options, task=None, **kw):
                return "email" if name == "by.function" else None

            class RouteForTask:
                def route_for_task(self, task, args=None, kwargs=None):
                    return "eu" if task == "by.class" else None

            class Nested:
                class Inner:
                    def __call__(self, name, args, kwargs, options, task=None, **kw):
                        return "email" if name == "by.nested" else None
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_dotted_paths_to_a_function_and_to_classes(routers_module: str) -> None:
    router = make(
        [
            f"{routers_module}.route_task",
            f"{routers_module}:RouteForTask",
            f"{routers_module}.Nested.Inner",
        ]
    )
    assert routers_module not in sys.modules  # imported at the first send, as Celery does
    assert router.route("by.function").queue == QUEUES[1]
    assert routers_module in sys.modules
    assert router.route("by.class").queue == QUEUES[2]
    assert router.route("by.nested").queue == QUEUES[1]
    assert router.route("other").queue == QUEUES[0]
    assert not router.cacheable


def test_a_dotted_path_that_does_not_import_fails_naming_the_setting(
    routers_module: str,
) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"task_routes.*no_such_module_xyz"):
        make("no_such_module_xyz.route").route("t")
    with pytest.raises(ImproperlyConfigured, match=r"task_routes.*has no 'missing'"):
        make(f"{routers_module}.missing").route("t")
    with pytest.raises(ImproperlyConfigured, match=r"task_routes.*not a dotted path"):
        make("route_task")


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ([42], "task_routes.*router 0.*int"),
        ({3: "q"}, "task_routes.*key"),
        ({"t": 42}, r"task_routes.*route of 't'"),
        ([Queue("q")], "is a queue, not a router"),
    ],
)
def test_a_bad_routes_setting_fails_at_start_up_naming_it(routes: Any, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        make(routes)


# --- where a send goes: Celery's rules (the table is what Celery 5.7 published) ----------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, ("", "celery", None)),
        ({"queue": "x"}, ("", "x", None)),
        ({"routing_key": "k"}, ("", "celery", None)),  # a key alone: the direct default queue
        ({"exchange": "ex", "routing_key": "k"}, ("ex", "k", None)),
        ({"priority": 5}, ("", "celery", 5)),
    ],
)
def test_no_settings(options: dict[str, Any], expected: tuple[Any, ...]) -> None:
    route = Router.from_settings(settings()).route("t", options=options)
    assert (route.exchange, route.routing_key, route.priority) == expected


def test_celerys_topic_exchange_example() -> None:
    """The routing guide's example: a default topic exchange, queues without an exchange."""
    router = Router.from_settings(
        settings(
            task_queues=(Queue("default", routing_key="task.#"), Queue("feed_tasks")),
            task_default_queue="default",
            task_default_exchange="tasks",
            task_default_exchange_type="topic",
            task_default_routing_key="task.default",
            task_routes={"feeds.tasks.import_feed": {"queue": "feed_tasks", "routing_key": "f.i"}},
        )
    )
    tasks = Exchange("tasks", "topic")
    assert router.queues == (
        Queue("default", exchange=tasks, routing_key="task.#"),
        Queue("feed_tasks", exchange=tasks, routing_key="task.default"),
    )
    assert where(router.route("feeds.tasks.import_feed")) == ("tasks", "f.i", "feed_tasks")
    assert where(router.route("other")) == ("tasks", "task.#", "default")
    assert where(router.route("other", options={"routing_key": "feed.x"})) == (
        "tasks",
        "feed.x",
        "default",
    )
    assert where(router.route("other", options={"queue": "feed_tasks"})) == (
        "tasks",
        "task.default",
        "feed_tasks",
    )


def test_a_queue_on_a_direct_exchange_is_reached_by_its_own_binding() -> None:
    """Celery publishes these through the default exchange by the queue's name; celeriac through
    the queue's direct exchange by its binding key: the same queue gets the message, and only
    it, as long as no other queue shares the key (a routing key without an exchange changes
    neither)."""
    special = Queue("special", exchange=Exchange("sx"), routing_key="sk")
    router = make(queues=[special, Queue("celery")])
    for options in ({"queue": "special"}, {"queue": "special", "routing_key": "zz"}):
        assert where(router.route("t", options=options)) == ("sx", "sk", "special")


def test_options_win_key_by_key_over_the_route() -> None:
    router = make({"t": {"queue": "email", "priority": 3}})
    assert (router.route("t").queue, router.route("t").priority) == (QUEUES[1], 3)
    moved = router.route("t", options={"queue": "eu"})
    assert (moved.queue, moved.priority) == (QUEUES[2], 3)  # Celery keeps the route's priority
    assert router.route("t", options={"priority": 7}).priority == 7
    assert router.route("t", options={"queue": None}).queue == QUEUES[1]


def test_an_explicit_exchange_decides_and_drops_the_routes_queue() -> None:
    router = make({"t": "email"})
    assert where(router.route("t", options={"exchange": "ex", "routing_key": "k"})) == (
        "ex",
        "k",
        None,
    )
    fan = router.route("t", options={"exchange": Exchange("fan", "fanout")})
    assert where(fan) == ("fan", "", None)


def test_queue_objects_in_options_and_routes() -> None:
    special = Queue("special", exchange=Exchange("sx", "topic"), routing_key="sk")
    router = make({"t": {"queue": special}})
    assert where(router.route("t")) == ("sx", "sk", "special")
    assert where(router.route("u", options={"queue": special})) == ("sx", "sk", "special")


def test_queues_bound_only_by_bindings_are_reached_by_name() -> None:
    from celeriac.routing import Binding

    by_headers = Queue("pdf", bindings=(Binding("by-kind", "pdf", "", {"kind": "pdf"}),))
    router = make(queues=[by_headers])
    assert where(router.route("t", options={"queue": "pdf"})) == ("", "pdf", "pdf")


# --- queues: aliases, missing ones, defaults -----------------------------------------------------


def test_missing_queues_created_or_refused() -> None:
    assert make({"t": "fresh"}).route("t").queue == Queue("fresh")
    refusing = make({"t": "nowhere"}, create_missing=False)
    with pytest.raises(ImproperlyConfigured, match=r"'nowhere'.*task_create_missing_queues"):
        refusing.route("t")
    assert refusing.route("other").queue == QUEUES[0]


def test_without_task_queues_the_default_queue_exists_even_without_create_missing() -> None:
    router = Router.from_settings(settings(task_create_missing_queues=False))
    assert router.worker_queues() == [Queue("celery")]
    assert where(router.route("t")) == ("", "celery", "celery")


def test_missing_queues_get_their_own_exchange_of_the_type_asked() -> None:
    router = Router.from_settings(settings(task_create_missing_queue_exchange_type="topic"))
    route = router.route("t", options={"queue": "fresh"})
    assert route.queue == Queue("fresh", exchange=Exchange("fresh", "topic"), routing_key="fresh")
    assert (route.exchange, route.routing_key) == ("fresh", "fresh")


def test_task_queue_max_priority_is_every_queues_x_max_priority_unless_it_says() -> None:
    router = Router.from_settings(
        settings(
            task_queues=[Queue("a"), Queue("b", arguments={"x-max-priority": 2})],
            task_queue_max_priority=5,
        )
    )
    a, b = router.queues
    assert (a.arguments, a.max_priority) == ({"x-max-priority": 5}, 5)
    assert (b.arguments, b.max_priority) == ({"x-max-priority": 2}, 2)
    assert router.queue("fresh").max_priority == 5


@pytest.mark.parametrize(
    ("given", "setting"),
    [
        ({"task_default_exchange_type": "x-delayed-message"}, "task_default_exchange_type"),
        ({"task_create_missing_queue_exchange_type": "nope"}, "task_create_missing_queue"),
        ({"task_queue_max_priority": 300}, "task_queue_max_priority"),
        ({"task_queues": "celery"}, "task_queues"),
        ({"task_queues": [Queue("a"), Queue("a")]}, "task_queues.*two queues"),
        ({"task_routes": [42]}, "task_routes"),
    ],
)
def test_bad_routing_settings_fail_naming_the_setting(given: dict[str, Any], setting: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=setting):
        Router.from_settings(settings(**given))


def test_celerys_dict_form_of_task_queues() -> None:
    router = Router.from_settings(
        settings(
            task_queues={
                "video": {"exchange": "media", "exchange_type": "topic", "binding_key": "video.#"},
                "plain": {},
                "ready": Queue("ready"),
            }
        )
    )
    video, plain, ready = router.queues
    assert video == Queue("video", exchange=Exchange("media", "topic"), routing_key="video.#")
    assert (plain, ready) == (Queue("plain"), Queue("ready"))
    with pytest.raises(ImproperlyConfigured, match=r"task_queues.*'video'.*unknown.*'colour'"):
        Router.from_settings(settings(task_queues={"video": {"colour": "red"}}))


# --- broadcast --------------------------------------------------------------------------------


def test_broadcast_queues_are_unique_routed_by_alias_and_not_declared_by_producers() -> None:
    first, second = Broadcast("reload"), Broadcast("reload")
    assert first.name != second.name
    assert first.name.startswith("bcast.")
    assert (first.exchange, first.alias, first.auto_delete) == (
        Exchange("reload", "fanout"),
        "reload",
        True,
    )
    router = make({"app.reload": {"queue": "reload"}}, queues=[Queue("celery"), first])
    route = router.route("app.reload")
    assert (route.exchange, route.queue) == ("reload", first)
    assert router.worker_queues(["reload"]) == [first]  # -Q by the alias
    assert router.worker_queues() == [Queue("celery"), first]
    queues, exchanges = router.declarations(route.queue)
    assert (queues, exchanges) == ([Queue("celery")], [Exchange("reload", "fanout")])
    assert router.declarations(Queue("other"), None, Queue("celery"), Queue("more")) == (
        [Queue("celery"), Queue("other"), Queue("more")],
        [Exchange("reload", "fanout")],
    )


def test_broadcast_with_a_fixed_or_unique_queue_name() -> None:
    assert Broadcast("r", queue="mine").name == "mine"
    unique = Broadcast("r", queue="mine", unique=True)
    assert unique.name.startswith("mine.") and len(unique.name) > len("mine.")
    with pytest.raises(ImproperlyConfigured, match="Broadcast"):
        Broadcast()


# --- the cache -----------------------------------------------------------------------------------


def test_the_route_cache_stays_bounded_under_per_send_routing_keys() -> None:
    from celeriac.routing import router as router_module

    router = make({"t": "eu"})
    for i in range(router_module._CACHE_LIMIT + 10):
        route = router.route("t", options={"routing_key": f"orders.eu.user{i}"})
        assert route.routing_key == f"orders.eu.user{i}"
    assert len(router._cache) <= router_module._CACHE_LIMIT
