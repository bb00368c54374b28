"""Every one of Celery 5.7's setting names is accepted, and its old upper-case name too.

The names are a literal here (read from Celery 5.7's ``celery.app.defaults``), not imported
from Celery: CI has no Celery. :mod:`celeriac.app.celery_settings` says what each does here;
these tests hold it to the list and to the code that reads the settings.
"""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac, ImproperlyConfigured
from celeriac.app import config
from celeriac.app.celery_settings import NO_EFFECT_DEFAULTS, OLD_NAMES, TABLE, Kind

CELERY_57_NAMES = [
    "accept_content",
    "result_accept_content",
    "enable_utc",
    "imports",
    "include",
    "timezone",
    "beat_enable_remote_control",
    "beat_remote_control_max_tick_age",
    "beat_max_loop_interval",
    "beat_schedule",
    "beat_scheduler",
    "beat_schedule_filename",
    "beat_sync_every",
    "beat_cron_starting_deadline",
    "broker_url",
    "broker_read_url",
    "broker_write_url",
    "broker_transport",
    "broker_transport_options",
    "broker_connection_timeout",
    "broker_connection_retry",
    "broker_connection_retry_on_startup",
    "broker_connection_max_retries",
    "broker_channel_error_retry",
    "broker_failover_strategy",
    "broker_heartbeat",
    "broker_heartbeat_checkrate",
    "broker_login_method",
    "broker_native_delayed_delivery_queue_type",
    "broker_pool_limit",
    "broker_pool_acquire_timeout",
    "broker_use_ssl",
    "broker_host",
    "broker_port",
    "broker_user",
    "broker_password",
    "broker_vhost",
    "cache_backend",
    "cache_backend_options",
    "cassandra_entry_ttl",
    "cassandra_keyspace",
    "cassandra_port",
    "cassandra_read_consistency",
    "cassandra_servers",
    "cassandra_bundle_path",
    "cassandra_table",
    "cassandra_write_consistency",
    "cassandra_auth_provider",
    "cassandra_auth_kwargs",
    "cassandra_options",
    "s3_access_key_id",
    "s3_secret_access_key",
    "s3_bucket",
    "s3_base_path",
    "s3_endpoint_url",
    "s3_region",
    "azureblockblob_container_name",
    "azureblockblob_retry_initial_backoff_sec",
    "azureblockblob_retry_increment_base",
    "azureblockblob_retry_max_attempts",
    "azureblockblob_base_path",
    "azureblockblob_connection_timeout",
    "azureblockblob_read_timeout",
    "gcs_bucket",
    "gcs_project",
    "gcs_base_path",
    "gcs_ttl",
    "control_queue_ttl",
    "control_queue_expires",
    "control_queue_exclusive",
    "control_queue_durable",
    "control_exchange",
    "couchbase_backend_settings",
    "arangodb_backend_settings",
    "mongodb_backend_settings",
    "cosmosdbsql_database_name",
    "cosmosdbsql_collection_name",
    "cosmosdbsql_consistency_level",
    "cosmosdbsql_max_retry_attempts",
    "cosmosdbsql_max_retry_wait_time",
    "event_queue_expires",
    "event_queue_ttl",
    "event_queue_prefix",
    "event_queue_exclusive",
    "event_queue_durable",
    "event_serializer",
    "event_exchange",
    "redis_backend_use_ssl",
    "redis_db",
    "redis_host",
    "redis_max_connections",
    "redis_username",
    "redis_password",
    "redis_port",
    "redis_socket_timeout",
    "redis_socket_connect_timeout",
    "redis_retry_on_timeout",
    "redis_socket_keepalive",
    "result_backend",
    "result_cache_max",
    "result_compression",
    "result_exchange",
    "result_exchange_type",
    "result_expires",
    "result_chord_expires",
    "result_failure_expires",
    "result_persistent",
    "result_extended",
    "result_serializer",
    "result_backend_transport_options",
    "result_chord_retry_interval",
    "result_chord_join_timeout",
    "result_backend_max_sleep_between_retries_ms",
    "result_backend_max_retries",
    "result_backend_base_sleep_between_retries_ms",
    "result_backend_always_retry",
    "elasticsearch_retry_on_timeout",
    "elasticsearch_max_retries",
    "elasticsearch_timeout",
    "elasticsearch_save_meta_as_text",
    "security_certificate",
    "security_cert_store",
    "security_key",
    "security_key_password",
    "security_digest",
    "database_url",
    "database_engine_options",
    "database_engine_callback",
    "database_short_lived_sessions",
    "database_table_schemas",
    "database_table_names",
    "database_create_tables_at_setup",
    "task_acks_late",
    "task_acks_on_failure_or_timeout",
    "task_acks_on_failure",
    "task_acks_on_timeout",
    "task_always_eager",
    "task_annotations",
    "task_compression",
    "task_create_missing_queues",
    "task_create_missing_queue_type",
    "task_create_missing_queue_exchange_type",
    "task_inherit_parent_priority",
    "task_default_delivery_mode",
    "task_default_queue",
    "task_default_queue_type",
    "task_default_exchange",
    "task_default_exchange_type",
    "task_default_routing_key",
    "task_default_rate_limit",
    "task_default_priority",
    "task_eager_propagates",
    "task_ignore_result",
    "task_store_eager_result",
    "task_protocol",
    "task_publish_retry",
    "task_publish_retry_policy",
    "task_queues",
    "task_queue_max_priority",
    "task_reject_on_worker_lost",
    "task_retry_on_worker_lost",
    "task_remote_tracebacks",
    "task_repr_maxlevels",
    "task_routes",
    "task_send_sent_event",
    "task_serializer",
    "task_soft_time_limit",
    "task_time_limit",
    "task_store_errors_even_if_ignored",
    "task_track_started",
    "task_allow_error_cb_on_chord_header",
    "worker_agent",
    "worker_autoscaler",
    "worker_cancel_long_running_tasks_on_connection_loss",
    "worker_soft_shutdown_timeout",
    "worker_enable_soft_shutdown_on_idle",
    "worker_concurrency",
    "worker_consumer",
    "worker_direct",
    "worker_disable_rate_limits",
    "worker_deduplicate_successful_tasks",
    "worker_enable_remote_control",
    "worker_hijack_root_logger",
    "worker_log_color",
    "worker_log_datefmt",
    "worker_log_format",
    "worker_lost_wait",
    "worker_max_memory_per_child",
    "worker_max_tasks_per_child",
    "worker_pool",
    "worker_pool_putlocks",
    "worker_pool_restarts",
    "worker_pool_start_method",
    "worker_proc_alive_timeout",
    "worker_prefetch_multiplier",
    "worker_eta_task_limit",
    "worker_enable_prefetch_count_reduction",
    "worker_disable_prefetch",
    "worker_redirect_stdouts",
    "worker_redirect_stdouts_level",
    "worker_send_task_events",
    "worker_state_db",
    "worker_task_log_datefmt",
    "worker_task_log_format",
    "worker_timer",
    "worker_timer_precision",
    "worker_detect_quorum_queues",
]

#: A sample of Celery's old names, as ``celery.app.defaults._TO_NEW_KEY`` maps them.
OLD_TO_NEW = {
    "CELERY_ALWAYS_EAGER": "task_always_eager",
    "BROKER_URL": "broker_url",
    "CELERY_RESULT_BACKEND": "result_backend",
    "CELERYD_CONCURRENCY": "worker_concurrency",
    "CELERYBEAT_SCHEDULE": "beat_schedule",
    "CELERY_TASK_SERIALIZER": "task_serializer",
    "CELERY_ACCEPT_CONTENT": "accept_content",
    "CELERY_TASK_RESULT_EXPIRES": "result_expires",
    "CELERYD_TASK_TIME_LIMIT": "task_time_limit",
    "CELERYD_PREFETCH_MULTIPLIER": "worker_prefetch_multiplier",
    "CELERY_SEND_EVENTS": "worker_send_task_events",
    "CELERY_SEND_TASK_SENT_EVENT": "task_send_sent_event",
    "CELERY_EAGER_PROPAGATES_EXCEPTIONS": "task_eager_propagates",
    "CELERY_MESSAGE_COMPRESSION": "task_compression",
    "CELERY_QUEUES": "task_queues",
    "CELERY_ROUTES": "task_routes",
    "CELERY_MAX_CACHED_RESULTS": "result_cache_max",
    "CELERY_RESULT_DBURI": "database_url",
    "CELERY_DISABLE_RATE_LIMITS": "worker_disable_rate_limits",
    "CELERY_TIMEZONE": "timezone",
    "ENABLE_UTC": "enable_utc",
    "CASSANDRA_SERVERS": "cassandra_servers",
}

#: Read by code already, but without effect yet (none now: events made -E real).
READ_BUT_NOT_YET: set[str] = set()

SRC = Path(__file__).resolve().parents[2] / "src" / "celeriac"
#: The settings modules themselves do not count as reading a setting.
SETTINGS_MODULES = {"config.py", "celery_settings.py", "conf_mapping.py", "setting_types.py"}


def test_the_literal_is_celery_57s_list() -> None:
    assert len(CELERY_57_NAMES) == len(set(CELERY_57_NAMES)) == 207


def test_the_table_has_exactly_celerys_names_plus_celeriacs_own() -> None:
    celery_rows = {name for name, entry in TABLE.items() if entry.celery}
    assert celery_rows == set(CELERY_57_NAMES)
    own = {name for name, entry in TABLE.items() if not entry.celery}
    assert own == {
        "task_default_retry_delay",
        "task_max_retries",
        "worker_shutdown_timeout",
        "worker_lease_renewal_interval",
        "worker_fetch_stall_timeout",
        "worker_prefork_fetch",
        "worker_revoke_expires",
        "result_max_bytes",
    }


@pytest.mark.parametrize("name", CELERY_57_NAMES)
def test_every_celery_name_is_accepted_read_back_and_written(name: str) -> None:
    conf = config.Settings()
    assert name in conf
    value = conf[name]  # the default: celeriac's for a typed setting, Celery's otherwise
    assert conf.get(name, "absent") == value
    assert getattr(conf, name) == value
    conf.update({name: value})
    assert conf[name] == value
    app = Celeriac("x", **{"broker_url": "memory://", name: value})
    assert app.conf[name] == value


def test_typed_settings_and_kept_ones_do_not_overlap_and_cover_the_table() -> None:
    assert config.SETTING_NAMES.isdisjoint(NO_EFFECT_DEFAULTS)
    assert set(config.SETTING_NAMES) | set(NO_EFFECT_DEFAULTS) == set(TABLE)
    for name in config.SETTING_NAMES:
        assert TABLE[name].kind in (Kind.IN_EFFECT, Kind.NOT_YET), name


def test_every_setting_not_in_effect_says_why_and_every_other_does_not() -> None:
    for name, entry in TABLE.items():
        if entry.kind is Kind.IN_EFFECT:
            assert entry.why == "", name
        else:
            assert len(entry.why) > 20, name


def _read_in_code() -> set[str]:
    """Setting names celeriac's code reads: ``conf.<name>`` or the name as a string literal
    (``task.option("acks_late", "task_acks_late")``, ``getattr(conf, name)`` over a tuple)."""
    text = "\n".join(
        path.read_text()
        for path in SRC.rglob("*.py")
        if not (path.parent.name == "app" and path.name in SETTINGS_MODULES)
    )
    found = set(re.findall(r"conf\.([a-z_]+)", text))
    found |= set(re.findall(r"[\"']([a-z_]+)[\"']", text))
    return found & set(TABLE)


def test_a_setting_marked_in_effect_is_read_by_celeriac() -> None:
    read = _read_in_code()
    unread = [n for n, e in TABLE.items() if e.kind is Kind.IN_EFFECT and n not in read]
    assert unread == []


def test_a_setting_read_by_celeriac_is_marked_in_effect() -> None:
    """When code starts reading a setting, its row in celery_settings.py must say so."""
    read = _read_in_code()
    stale = [n for n, e in TABLE.items() if e.kind is not Kind.IN_EFFECT and n in read]
    stale = [n for n in stale if n not in READ_BUT_NOT_YET]
    assert stale == []


# -- Celery's old upper-case names ----------------------------------------------------------------
def test_old_names_map_one_to_one_onto_celerys_names() -> None:
    assert len(OLD_NAMES) == 207
    assert set(OLD_NAMES.values()) == set(CELERY_57_NAMES)
    for old, new in OLD_TO_NEW.items():
        assert OLD_NAMES[old] == new
        assert config.canonical_name(old) == new


def test_a_config_module_of_old_names_is_read() -> None:
    module = types.ModuleType("celeryconfig")
    module.BROKER_URL = "memory://old-names"  # type: ignore[attr-defined]
    module.CELERY_ALWAYS_EAGER = True  # type: ignore[attr-defined]
    module.CELERYD_CONCURRENCY = 3  # type: ignore[attr-defined]
    module.CELERY_TASK_RESULT_EXPIRES = 60  # type: ignore[attr-defined]
    module.CELERYBEAT_SCHEDULE = {"tick": {"task": "t", "schedule": 5.0}}  # type: ignore[attr-defined]
    module.CELERY_ACCEPT_CONTENT = ("json",)  # type: ignore[attr-defined]
    module.BROKER_POOL_LIMIT = 5  # type: ignore[attr-defined]
    module.DEBUG = True  # type: ignore[attr-defined]  # not a setting: ignored, as in Celery
    app = Celeriac("x")
    app.config_from_object(module)
    assert app.broker_url == "memory://old-names"
    assert app.conf.task_always_eager is True
    assert app.conf.worker_concurrency == 3
    assert app.conf.result_expires == 60.0
    assert app.conf.beat_schedule == {"tick": {"task": "t", "schedule": 5.0}}
    assert app.conf.accept_content == ["json"]
    assert app.conf["broker_pool_limit"] == 5
    # getattr: old names are properties mypy does not see (item access is typed)
    assert getattr(app.conf, "CELERYD_CONCURRENCY") == 3  # noqa: B009
    assert app.conf["CELERY_ALWAYS_EAGER"] is True


def test_the_current_name_wins_over_its_old_name_in_one_source() -> None:
    found = config.from_object({"CELERYD_CONCURRENCY": 4, "worker_concurrency": 3})
    assert found == {"worker_concurrency": 3}


def test_a_bad_value_under_an_old_name_names_the_setting() -> None:
    with pytest.raises(ImproperlyConfigured, match="'worker_concurrency' must be int"):
        config.from_object({"CELERYD_CONCURRENCY": "four"})


def test_django_namespace_reads_current_and_old_names() -> None:
    settings = types.SimpleNamespace(
        CELERY_BROKER_URL="memory://django",
        CELERY_TASK_ALWAYS_EAGER=True,
        CELERY_TASK_RESULT_EXPIRES=30,  # an old name that carries the prefix
        CELERYD_CONCURRENCY=2,  # an old name without it: Celery reads it too
        task_acks_late=True,  # a current name without it: so does Celery
        task_default_queue="plain",  # ... below the namespaced one
        CELERY_TASK_DEFAULT_QUEUE="namespaced",
        TIME_ZONE="Europe/Paris",  # Django's own: the time zone when none is given
        DEBUG=True,
        INSTALLED_APPS=["x"],
    )
    found = config.from_object(settings, namespace="CELERY")
    assert found == {
        "broker_url": "memory://django",
        "task_always_eager": True,
        "result_expires": 30.0,
        "worker_concurrency": 2,
        "task_acks_late": True,
        "task_default_queue": "namespaced",
        "timezone": "Europe/Paris",
    }
    explicit = types.SimpleNamespace(CELERY_TIMEZONE="Asia/Tokyo", TIME_ZONE="Europe/Paris")
    assert config.from_object(explicit, namespace="CELERY") == {"timezone": "Asia/Tokyo"}


def test_django_namespace_refuses_an_unknown_celery_name_with_a_suggestion() -> None:
    settings = types.SimpleNamespace(CELERY_BROKR_URL="memory://")
    with pytest.raises(ImproperlyConfigured, match="'CELERY_BROKR_URL'; did you mean 'broker_url'"):
        config.from_object(settings, namespace="CELERY")


def test_old_names_as_keyword_arguments_items_and_attributes() -> None:
    app = Celeriac("x", broker="memory://", CELERY_ALWAYS_EAGER=True)
    assert app.conf.task_always_eager is True
    conf = config.Settings()
    conf.update(CELERYD_CONCURRENCY=3, CELERY_DEFAULT_QUEUE="q")
    conf["CELERY_IGNORE_RESULT"] = True
    conf.CELERY_TRACK_STARTED = True
    assert (conf.worker_concurrency, conf.task_default_queue) == (3, "q")
    assert (conf.task_ignore_result, conf.task_track_started) == (True, True)
    assert "CELERY_ALWAYS_EAGER" in conf and "CELERY_ALWAYS_EAGR" not in conf


def test_a_namespaced_name_read_without_the_namespace_is_pointed_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Celery silently ignores CELERY_BROKER_URL read without namespace='CELERY'."""
    settings = types.SimpleNamespace(CELERY_BROKER_URL="memory://x", CELERY_ALWAYS_EGER=True)
    with caplog.at_level("WARNING", logger="celeriac.app.config"):
        assert config.from_object(settings) == {}
    assert sorted(r.getMessage() for r in caplog.records) == [
        "CELERY_ALWAYS_EGER is not one of Celery's setting names; "
        "did you mean 'CELERY_ALWAYS_EAGER'?",
        "CELERY_BROKER_URL is not read: settings named CELERY_<SETTING> need namespace='CELERY'",
    ]


def test_lower_case_old_names_are_not_settings_as_in_celery() -> None:
    with pytest.raises(ImproperlyConfigured, match="unknown setting 'celery_always_eager'"):
        config.validate("celery_always_eager", True)


# -- what has no effect ---------------------------------------------------------------------------
def test_startup_notes_name_each_set_setting_without_effect_and_why() -> None:
    conf = config.Settings()
    assert config.startup_notes(conf) == []
    conf.update(
        broker_pool_limit=20,  # no effect
        beat_sync_every=5,  # not read by celeriac's beat
        task_acks_late=True,  # in effect: no note
        worker_pool_putlocks=True,  # no effect, but set to Celery's default: not a change
    )
    notes = config.startup_notes(conf)
    assert notes == [
        "setting 'beat_sync_every' is not in effect yet: " + TABLE["beat_sync_every"].why,
        "setting 'broker_pool_limit' has no effect: "
        "celeriac keeps one broker connection per process and thread (or event loop): there is "
        "no pool to size",
    ]


def test_a_setting_without_effect_is_kept_as_given() -> None:
    conf = config.Settings()
    options = {"pool_pre_ping": False}
    conf["database_engine_options"] = options
    assert conf["database_engine_options"] == options
    assert getattr(conf, "database_engine_options") == options  # noqa: B009
    assert conf.get("cassandra_servers") is None
    assert conf["azureblockblob_container_name"] == "celery"  # Celery's default
    conf.s3_bucket = "bucket"
    assert conf.as_dict()["s3_bucket"] == "bucket"


# -- environment variables ------------------------------------------------------------------------
def test_environment_variables_for_the_new_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERIAC_WORKER_SEND_TASK_EVENTS", "true")
    monkeypatch.setenv("CELERIAC_EVENT_QUEUE_TTL", "2.5")
    monkeypatch.setenv("CELERIAC_BROKER_HEARTBEAT", "none")
    monkeypatch.setenv("CELERIAC_BEAT_SCHEDULE", '{"t": {"task": "t", "schedule": 10}}')
    monkeypatch.setenv("CELERIAC_IMPORTS", "proj.a,proj.b")
    monkeypatch.setenv("CELERIAC_TASK_DEFAULT_DELIVERY_MODE", "transient")
    monkeypatch.setenv("CELERIAC_BROKER_POOL_LIMIT", "20")
    found = config.from_environ()
    assert found == {
        "worker_send_task_events": True,
        "event_queue_ttl": 2.5,
        "broker_heartbeat": None,
        "beat_schedule": {"t": {"task": "t", "schedule": 10}},
        "imports": ["proj.a", "proj.b"],
        "task_default_delivery_mode": 1,
        "broker_pool_limit": 20,
    }


def test_a_bad_environment_value_of_a_new_setting_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERIAC_EVENT_QUEUE_TTL", "soon")
    with pytest.raises(ImproperlyConfigured, match="CELERIAC_EVENT_QUEUE_TTL"):
        config.from_environ()


def test_celerys_own_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "memory://from-celery-env")
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "memory://results")
    app = Celeriac("x", broker="memory://from-code")
    assert app.broker_url == "memory://from-celery-env"
    assert app.conf.result_backend == "memory://results"
    monkeypatch.setenv("CELERIAC_BROKER_URL", "memory://from-celeriac-env")
    assert config.from_environ()["broker_url"] == "memory://from-celeriac-env"


# -- rules of the new typed settings --------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("task_default_exchange_type", "fan", "must be one of direct, topic, fanout, headers"),
        ("task_default_delivery_mode", 3, "must be 1, 2, 'transient' or 'persistent'"),
        ("task_queue_max_priority", 256, "must be 0-255"),
        ("worker_redirect_stdouts_level", "LOUD", "not a log level name"),
        ("timezone", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("beat_schedule", ["t"], "'beat_schedule' must be dict"),
        ("imports", 5, "'imports' must be list"),
        ("task_annotations", 5, "'task_annotations' must be a dict"),
        ("event_queue_ttl", "5", "'event_queue_ttl' must be float"),
        ("worker_send_task_events", "yes", "'worker_send_task_events' must be bool"),
    ],
)
def test_new_settings_are_validated(name: str, value: Any, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
        config.validate(name, value)


def test_new_settings_normalise_celerys_spellings() -> None:
    assert config.validate("task_default_delivery_mode", "persistent") == 2
    assert config.validate("worker_redirect_stdouts_level", "info") == "INFO"
    assert config.validate("include", ("a.tasks", "b.tasks")) == ["a.tasks", "b.tasks"]
    assert config.validate("timezone", "Europe/Paris") == "Europe/Paris"
    annotations = [{"t.add": {"rate_limit": "10/s"}}, "proj.annotations:Annotate"]
    assert config.validate("task_annotations", annotations) is annotations
