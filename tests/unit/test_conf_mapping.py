"""``app.conf`` as Celery users use it: a mapping and attributes, every write validated."""

from __future__ import annotations

import pickle
from datetime import timedelta
from typing import Any

import pytest

from celeriac import ImproperlyConfigured, Queue
from celeriac.app import config
from celeriac.app.celery_settings import NO_EFFECT_DEFAULTS


@pytest.fixture
def conf() -> config.Settings:
    return config.Settings()


def test_update_takes_a_mapping_pairs_and_keywords(conf: config.Settings) -> None:
    conf.update({"task_acks_late": True}, worker_concurrency=2)
    conf.update([("task_default_queue", "q")])
    assert (conf.task_acks_late, conf.worker_concurrency, conf.task_default_queue) == (True, 2, "q")


def test_a_bad_update_changes_nothing(conf: config.Settings) -> None:
    with pytest.raises(ImproperlyConfigured, match="'worker_concurrency' must be >= 1"):
        conf.update(task_acks_late=True, broker_pool_limit=3, worker_concurrency=0)
    with pytest.raises(
        ImproperlyConfigured, match="'task_acks_lat'; did you mean 'task_acks_late'"
    ):
        conf.update({"task_default_queue": "q", "task_acks_lat": True})
    assert conf.changed() == {}


def test_items_read_write_and_reset(conf: config.Settings) -> None:
    conf["result_expires"] = timedelta(minutes=5)
    assert conf["result_expires"] == 300.0
    del conf["result_expires"]
    assert conf["result_expires"] == 86400.0
    with pytest.raises(KeyError):
        conf["no_such_setting"]
    with pytest.raises(KeyError):
        del conf["no_such_setting"]
    with pytest.raises(ImproperlyConfigured, match="unknown setting 'no_such_setting'"):
        conf["no_such_setting"] = 1
    with pytest.raises(ImproperlyConfigured, match="'task_acks_late' must be bool"):
        conf["task_acks_late"] = "yes"
    assert conf.task_acks_late is False


def test_get_contains_keys_items_and_len(conf: config.Settings) -> None:
    assert conf.get("worker_pool") == "prefork"
    assert conf.get("no_such_setting", 7) == 7
    assert "task_routes" in conf and "broker_pool_limit" in conf and "BROKER_URL" in conf
    not_a_name: object = 5
    assert "no_such_setting" not in conf and not_a_name not in conf
    keys = list(conf.keys())
    assert len(keys) == len(conf) == 215 == len(set(keys))  # Celery 5.7's 207 and 8 of our own
    assert keys[: len(config.SETTING_NAMES)] == [n for n in keys if n in config.SETTING_NAMES]
    assert dict(conf.items())["broker_pool_limit"] == 10
    assert dict(conf)["task_default_queue"] == "celery"


def test_setdefault_changes_nothing_since_every_setting_is_present(conf: config.Settings) -> None:
    """As in Celery, whose conf holds every setting with its default."""
    assert conf.setdefault("worker_concurrency", 8) is None
    assert conf.worker_concurrency is None
    conf.worker_concurrency = 2
    assert conf.setdefault("worker_concurrency", 8) == 2
    with pytest.raises(ImproperlyConfigured, match="unknown setting 'worker_concurency'"):
        conf.setdefault("worker_concurency", 8)


def test_attribute_assignment_validates(conf: config.Settings) -> None:
    def route(name: str, args: Any, kwargs: Any, options: Any, **kw: Any) -> dict[str, str]:
        return {"queue": "q"}

    conf.task_routes = {"t.*": {"queue": "q"}}
    assert conf.task_routes == {"t.*": {"queue": "q"}}
    conf.task_routes = route
    assert conf.task_routes is route
    conf.beat_schedule = {"every-minute": {"task": "t.tick", "schedule": 60.0}}
    assert conf.beat_schedule["every-minute"]["task"] == "t.tick"
    conf.task_queues = (Queue("a"), Queue("b"))  # a tuple, as in Celery
    assert [q.name for q in conf.task_queues or ()] == ["a", "b"]
    with pytest.raises(ImproperlyConfigured, match="'beat_schedule' must be dict"):
        conf.beat_schedule = ["every-minute"]  # type: ignore[assignment]
    with pytest.raises(ImproperlyConfigured, match="unknown setting 'task_route'"):
        conf.task_route = {}
    assert conf.beat_schedule["every-minute"]["task"] == "t.tick"


def test_a_listener_is_told_validated_changes_and_the_fields_stay(conf: config.Settings) -> None:
    told: list[dict[str, Any]] = []
    conf.listener = told.append
    conf.update(CELERY_ALWAYS_EAGER=True, result_expires=timedelta(seconds=30))
    conf["broker_pool_limit"] = 4
    conf.task_routes = {"t": {"queue": "q"}}
    del conf["worker_concurrency"]
    assert told == [
        {"task_always_eager": True, "result_expires": 30.0},
        {"broker_pool_limit": 4},
        {"task_routes": {"t": {"queue": "q"}}},
        {"worker_concurrency": None},
    ]
    assert conf.changed() == {}
    with pytest.raises(ImproperlyConfigured):
        conf.update(task_acks_late=True, worker_prefetch_multiplier=0)
    assert len(told) == 4


def test_assign_sets_without_checks_or_listener(conf: config.Settings) -> None:
    told: list[dict[str, Any]] = []
    conf.listener = told.append
    conf.assign({"task_always_eager": True, "broker_pool_limit": 4})
    assert told == []
    assert conf.task_always_eager is True
    # getattr: a setting without effect is a property mypy does not see (item access is typed)
    assert conf["broker_pool_limit"] == 4 == getattr(conf, "broker_pool_limit")  # noqa: B009


def test_assigning_as_dict_replaces_every_value_kept_ones_too(conf: config.Settings) -> None:
    """How the app writes back the settings it re-derived: nothing of the old ones survives."""
    conf.update(broker_pool_limit=3, task_acks_late=True)
    fresh = config.Settings()
    fresh.update(worker_concurrency=2)
    conf.assign(fresh.as_dict())
    assert conf == fresh
    assert conf.changed() == {"worker_concurrency": 2}


def test_apply_is_all_or_nothing(conf: config.Settings) -> None:
    with pytest.raises(ImproperlyConfigured):
        config.apply(conf, {"task_acks_late": True, "task_default_priority": 10})
    assert conf.task_acks_late is False


def test_table_and_humanize_mask_secrets(conf: config.Settings) -> None:
    conf.update(
        broker_url="redis://:s3cret@localhost:6379/0",
        result_backend="redis://user:s3cret@localhost/1",
        broker_transport_options={"password": "s3cret", "key_prefix": "app:"},
        security_key="-----BEGIN PRIVATE KEY-----",
        task_default_routing_key="tasks",
        task_acks_late=True,
    )
    table = conf.table()
    assert table == {
        "broker_url": "redis://:***@localhost:6379/0",
        "broker_transport_options": {"password": "********", "key_prefix": "app:"},
        "result_backend": "redis://user:***@localhost/1",
        "task_default_routing_key": "tasks",
        "task_acks_late": True,
        "security_key": "********",
    }
    assert "s3cret" not in conf.humanize() and "s3cret" not in repr(conf)
    assert "task_acks_late: True" in conf.humanize().splitlines()
    assert conf.table(censored=False)["broker_url"] == "redis://:s3cret@localhost:6379/0"
    everything = conf.table(with_defaults=True)
    assert len(everything) == len(conf) and everything["broker_pool_limit"] == 10


def test_value_set_for_and_without_defaults(conf: config.Settings) -> None:
    conf.update(CELERY_ALWAYS_EAGER=True, broker_pool_limit=3)
    assert conf.value_set_for("task_always_eager") and conf.value_set_for("CELERY_ALWAYS_EAGER")
    assert not conf.value_set_for("task_acks_late") and not conf.value_set_for("nonsense")
    assert conf.without_defaults() == {"task_always_eager": True, "broker_pool_limit": 3}


def test_clear_puts_every_setting_back(conf: config.Settings) -> None:
    conf.update(task_acks_late=True, broker_pool_limit=3, accept_content=["json", "msgpack"])
    conf.clear()
    assert conf.changed() == {}
    assert conf.accept_content == ["json"]


def test_copy_and_pickle_keep_values_not_the_listener(conf: config.Settings) -> None:
    conf.update(task_acks_late=True, broker_pool_limit=3)
    conf.listener = lambda changes: None
    for twin in (conf.copy(), pickle.loads(pickle.dumps(conf))):
        assert isinstance(twin, config.Settings)
        assert twin == conf
        assert twin.listener is None
        twin.task_acks_late = False
        assert conf.task_acks_late is True


def test_mutable_defaults_are_not_shared() -> None:
    first, second = config.Settings(), config.Settings()
    first.accept_content.append("msgpack")
    first["cache_backend_options"]["x"] = 1
    assert second.accept_content == ["json"]
    assert second["cache_backend_options"] == {} == NO_EFFECT_DEFAULTS["cache_backend_options"]


def test_reads_of_typed_settings_are_plain_slot_reads() -> None:
    """A class with ``__getattr__`` takes a slower path for every attribute read (2.5 times
    slower measured on the send path's reads): the names without a slot are properties."""
    assert not hasattr(config.Settings, "__getattr__")
    assert not hasattr(config.Settings(), "__dict__")
