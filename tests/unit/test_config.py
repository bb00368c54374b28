from __future__ import annotations

import types
from datetime import timedelta
from typing import Any

import pytest

from celeriac import Celeriac, ImproperlyConfigured, Queue
from celeriac.app import config


def test_defaults_are_the_embedded_sqlite_file(tmp_path: pytest.TempPathFactory) -> None:
    app = Celeriac("x")
    assert app.broker_url == "sqlite:///celeriac.db"
    assert app.result_backend_url == "sqlite:///celeriac.db"


def test_a_broker_without_a_backend_disables_results() -> None:
    app = Celeriac("x", broker="memory://nobackend")
    assert app.result_backend_url is None
    assert app.backend is None


def test_unknown_setting_names_itself_and_suggests() -> None:
    with pytest.raises(ImproperlyConfigured, match="'brokr_url'; did you mean 'broker_url'"):
        Celeriac("x", brokr_url="memory://")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("worker_concurrency", "3", "'worker_concurrency' must be int"),
        ("task_acks_late", 1, "'task_acks_late' must be bool"),
        ("worker_concurrency", 0, "'worker_concurrency' must be >= 1"),
        ("task_default_priority", 11, "'task_default_priority' must be 0-9"),
        ("accept_content", 5, "'accept_content' must be"),
        ("task_serializer", "jsn", "'task_serializer'"),
        ("accept_content", ["json", "bogus"], "'accept_content'"),
        ("task_compression", "rar", "'task_compression'"),
        ("broker_url", "nats2://x", "unknown scheme 'nats2'"),
        ("task_queues", ["io"], "'task_queues'"),
    ],
)
def test_ill_typed_or_invalid_setting_fails_naming_it(
    name: str, value: object, message: str
) -> None:
    settings: dict[str, Any] = {"broker_url": "memory://", name: value}
    with pytest.raises(ImproperlyConfigured, match=message):
        Celeriac("x", **settings)


def test_values_are_normalised() -> None:
    app = Celeriac(
        "x",
        broker="memory://",
        result_expires=timedelta(hours=1),
        accept_content=("json", "msgpack"),
        task_queues=[Queue("io")],
    )
    assert app.conf.result_expires == 3600.0
    assert app.conf.accept_content == ["json", "msgpack"]


def test_config_from_object_module_dict_and_namespace() -> None:
    module = types.ModuleType("celeryconfig")
    module.broker_url = "memory://fromobj"  # type: ignore[attr-defined]
    module.worker_concurrency = 7  # type: ignore[attr-defined]
    module.os = types  # type: ignore[attr-defined]  # modules are ignored
    app = Celeriac("x")
    app.config_from_object(module)
    assert app.broker_url == "memory://fromobj"
    assert app.conf.worker_concurrency == 7
    app.config_from_object({"task_acks_late": True})
    assert app.conf.task_acks_late is True
    django = types.SimpleNamespace(CELERY_WORKER_CONCURRENCY=3, DEBUG=True, OTHER=1)
    app.config_from_object(django, namespace="CELERY")
    assert app.conf.worker_concurrency == 3


def test_config_from_object_rejects_unknown_and_keeps_old_settings() -> None:
    app = Celeriac("x", broker="memory://keep")
    with pytest.raises(ImproperlyConfigured, match="'worker_concurency'"):
        app.config_from_object({"worker_concurency": 2, "task_acks_late": True})
    assert app.conf.task_acks_late is False
    with pytest.raises(ImproperlyConfigured, match="cannot import config module"):
        app.config_from_object("no_such_module_for_celeriac")


def test_environment_wins_and_is_parsed_by_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERIAC_WORKER_CONCURRENCY", "5")
    monkeypatch.setenv("CELERIAC_ACCEPT_CONTENT", "json,msgpack")
    monkeypatch.setenv("CELERIAC_TASK_ACKS_LATE", "yes")
    monkeypatch.setenv("CELERIAC_RESULT_EXPIRES", "none")
    monkeypatch.setenv("CELERIAC_BROKER_TRANSPORT_OPTIONS", '{"lease_seconds": 5}')
    app = Celeriac("x", broker="memory://", worker_concurrency=2)
    assert app.conf.worker_concurrency == 5
    assert app.conf.accept_content == ["json", "msgpack"]
    assert app.conf.task_acks_late is True
    assert app.conf.result_expires is None
    assert app.conf.broker_transport_options == {"lease_seconds": 5}


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERIAC_WORKER_CONCURRENCY", "many")
    with pytest.raises(ImproperlyConfigured, match="CELERIAC_WORKER_CONCURRENCY"):
        Celeriac("x", broker="memory://")


def test_every_setting_has_a_checkable_type() -> None:
    defaults = config.Settings()
    for name in config.SETTING_NAMES:
        assert config.validate(name, getattr(defaults, name)) == getattr(defaults, name)
