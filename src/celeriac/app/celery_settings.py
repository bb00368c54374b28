"""Every setting name Celery 5.7 has, and what each does in celeriac: one table, read by people.

A Celery project moves to celeriac by changing its imports, so its settings must not stop it:
every one of Celery's 207 names is accepted. Each row of :data:`TABLE` says which of three kinds
the name is:

* **in effect** (:func:`used`): a typed field of :class:`celeriac.app.config.Settings` that
  celeriac reads;
* **not yet** (:func:`soon`): a typed, validated field that nothing reads yet (beat, events,
  signing, parts of logging and routing are still to come), so that the code that will read it
  can; the row says what happens meanwhile;
* **no effect** (:func:`ignored`): accepted and kept (``app.conf["broker_pool_limit"]`` reads it
  back, or Celery's default) but meaningless here; the row says why, in words for the user.

Setting a name of the last two kinds is not an error: :func:`celeriac.app.config.startup_notes`
gives the worker one line per such setting to log. Rows made with ``own=True`` are celeriac's
own settings, which Celery does not have.

``old`` is the upper-case name Celery used before 4.0 (``CELERY_ALWAYS_EAGER``,
``CELERYD_CONCURRENCY``...), still read from config modules; where a row gives none, the old
name is the new one in upper case (``BROKER_URL``). The facts come from Celery 5.7's
``celery/app/defaults.py``; the reasons are celeriac's.
"""

from __future__ import annotations

import enum
from typing import Any


class Kind(enum.Enum):
    IN_EFFECT = "in effect"
    NOT_YET = "not in effect yet"
    NO_EFFECT = "no effect"


class Entry:
    """One row: a plain slots class, since 211 of them are built at import (a dataclass costs
    several times more to define and to construct)."""

    __slots__ = ("celery", "default", "kind", "old", "why")

    def __init__(
        self,
        kind: Kind,
        why: str = "",
        default: Any = None,
        old: str | None = None,
        celery: bool = True,
    ) -> None:
        self.kind = kind
        #: For the user: why the setting is not in effect (empty when it is).
        self.why = why
        #: ``NO_EFFECT`` only: the value read back until one is set (Celery's default).
        self.default = default
        #: Celery's pre-4.0 upper-case name, when it is not the new name upper-cased.
        self.old = old
        #: Whether Celery has this setting too (False for celeriac's own).
        self.celery = celery

    def __repr__(self) -> str:
        return f"Entry({self.kind.name}, why={self.why!r}, old={self.old!r})"


def used(*, old: str | None = None, own: bool = False) -> Entry:
    return Entry(Kind.IN_EFFECT, old=old, celery=not own)


def soon(why: str, *, old: str | None = None) -> Entry:
    return Entry(Kind.NOT_YET, why, old=old)


def ignored(default: Any, why: str, *, old: str | None = None) -> Entry:
    return Entry(Kind.NO_EFFECT, why, default, old)


BEAT = (
    "celeriac's beat keeps its state in the broker's store, wakes when a slot, its lease or a "
    "change needs it, and is changed with 'celeriac beat add|pause|...'; it does not read this"
)
EVENTS = (
    "an events listener's queue is made by the broker's transient fan-out (on RabbitMQ an "
    "exclusive queue with a 60 s message TTL and a length limit), not from this setting"
)
CONTROL = (
    "celeriac's workers listen for remote control without a queue of their own (nothing is "
    "kept for a worker that is gone) and callers' reply queues go with their connection: "
    "there is no queue to set this on"
)
LOGS = "the worker's logging set-up does not read it yet"
SIGNING = (
    "celeriac signs with Ed25519, whose hash is part of the algorithm (SHA-512): there is no "
    "digest to choose"
)
NO_POOL = (
    "celeriac keeps one broker connection per process and thread (or event loop): there is "
    "no pool to size"
)
TLS = (
    "give TLS in broker_url (amqps://, rediss://) and its options in broker_transport_options "
    "(RabbitMQ: 'ssl', in this setting's shape; Redis: ssl_cert_reqs, ssl_ca_certs, ...)"
)
PARTS = "write the broker's address in broker_url (scheme://user:password@host:port/vhost)"
REDIS_OPTION = (
    "the Redis result backend takes its options from the result_backend URL or "
    "result_backend_transport_options (socket_timeout, max_connections, ...)"
)
REDIS_ADDRESS = "write the Redis address in result_backend (redis://user:password@host:port/db)"
DELAYS = "delays wait in the broker, never in a worker's memory"
BACKEND_RETRY = (
    "celeriac's result backends retry an idempotent operation once on a lost connection, "
    "and report the failure after that: there is no retry policy to tune"
)


def no_backend(name: str) -> str:
    return (
        f"celeriac has no {name} result backend (it has sqlite://, redis://, rpc:// and memory://)"
    )


CASSANDRA = no_backend("Cassandra")
S3 = no_backend("S3")
AZURE = no_backend("Azure Block Blob")
GCS = no_backend("Google Cloud Storage")
COSMOS = no_backend("CosmosDB")
ELASTIC = no_backend("Elasticsearch")
DATABASE = no_backend("SQLAlchemy database") + "; db+sqlite:// is its own SQLite store"
CACHE = no_backend("memcached") + "; cache+memory:// works, in one process"

TABLE: dict[str, Entry] = {
    # -- top level --------------------------------------------------------------------------------
    "accept_content": used(old="CELERY_ACCEPT_CONTENT"),
    "result_accept_content": used(),
    "enable_utc": soon("not read: a naive eta or expires is read as UTC"),
    "imports": used(old="CELERY_IMPORTS"),
    "include": used(old="CELERY_INCLUDE"),
    "timezone": used(old="CELERY_TIMEZONE"),
    # -- beat -------------------------------------------------------------------------------------
    "beat_enable_remote_control": soon(BEAT, old="CELERYBEAT_ENABLE_REMOTE_CONTROL"),
    "beat_remote_control_max_tick_age": soon(BEAT, old="CELERYBEAT_REMOTE_CONTROL_MAX_TICK_AGE"),
    "beat_max_loop_interval": soon(BEAT, old="CELERYBEAT_MAX_LOOP_INTERVAL"),
    "beat_schedule": used(old="CELERYBEAT_SCHEDULE"),
    "beat_scheduler": soon(BEAT, old="CELERYBEAT_SCHEDULER"),
    "beat_schedule_filename": soon(BEAT, old="CELERYBEAT_SCHEDULE_FILENAME"),
    "beat_sync_every": soon(BEAT, old="CELERYBEAT_SYNC_EVERY"),
    "beat_cron_starting_deadline": soon(
        "not read: give each entry its misfire_grace (seconds a slot may be late)",
        old="CELERYBEAT_CRON_STARTING_DEADLINE",
    ),
    # -- broker -----------------------------------------------------------------------------------
    "broker_url": used(),
    "broker_read_url": ignored(None, "celeriac sends and consumes through broker_url"),
    "broker_write_url": ignored(None, "celeriac sends and consumes through broker_url"),
    "broker_transport": ignored(None, "celeriac picks the transport from broker_url's scheme"),
    "broker_transport_options": used(),
    "broker_connection_timeout": used(),
    "broker_connection_retry": soon(
        "not read yet: the Redis and RabbitMQ transports reconnect after a lost connection "
        "whatever its value"
    ),
    "broker_connection_retry_on_startup": used(),
    "broker_connection_max_retries": used(),
    "broker_channel_error_retry": ignored(
        False, "celeriac's RabbitMQ transport reopens a closed channel on next use: no switch"
    ),
    "broker_failover_strategy": ignored(
        None, "celeriac tries the URLs of a ';'-separated broker_url in turn, with backoff"
    ),
    "broker_heartbeat": soon(
        "not read yet: give heartbeat in broker_transport_options or the amqp:// URL "
        "(celeriac's default is 60 s)"
    ),
    "broker_heartbeat_checkrate": ignored(
        3.0, "the RabbitMQ client checks heartbeats itself: there is no rate to set"
    ),
    "broker_login_method": ignored(
        None, "celeriac logs in to RabbitMQ with broker_url's user and password (PLAIN)"
    ),
    "broker_native_delayed_delivery_queue_type": ignored(
        "quorum", DELAYS + " (RabbitMQ: per-delay TTL queues of celeriac's own design)"
    ),
    "broker_pool_limit": ignored(10, NO_POOL),
    "broker_pool_acquire_timeout": ignored(None, NO_POOL),
    "broker_use_ssl": ignored(False, TLS),
    "broker_host": ignored(None, PARTS),
    "broker_port": ignored(None, PARTS),
    "broker_user": ignored(None, PARTS),
    "broker_password": ignored(None, PARTS),
    "broker_vhost": ignored(None, PARTS),
    # -- result backends celeriac does not have ---------------------------------------------------
    "cache_backend": ignored(None, CACHE, old="CELERY_CACHE_BACKEND"),
    "cache_backend_options": ignored({}, CACHE, old="CELERY_CACHE_BACKEND_OPTIONS"),
    "cassandra_entry_ttl": ignored(None, CASSANDRA),
    "cassandra_keyspace": ignored(None, CASSANDRA),
    "cassandra_port": ignored(None, CASSANDRA),
    "cassandra_read_consistency": ignored(None, CASSANDRA),
    "cassandra_servers": ignored(None, CASSANDRA),
    "cassandra_bundle_path": ignored(None, CASSANDRA),
    "cassandra_table": ignored(None, CASSANDRA),
    "cassandra_write_consistency": ignored(None, CASSANDRA),
    "cassandra_auth_provider": ignored(None, CASSANDRA),
    "cassandra_auth_kwargs": ignored(None, CASSANDRA),
    "cassandra_options": ignored({}, CASSANDRA),
    "s3_access_key_id": ignored(None, S3),
    "s3_secret_access_key": ignored(None, S3),
    "s3_bucket": ignored(None, S3),
    "s3_base_path": ignored(None, S3),
    "s3_endpoint_url": ignored(None, S3),
    "s3_region": ignored(None, S3),
    "azureblockblob_container_name": ignored("celery", AZURE),
    "azureblockblob_retry_initial_backoff_sec": ignored(2, AZURE),
    "azureblockblob_retry_increment_base": ignored(2, AZURE),
    "azureblockblob_retry_max_attempts": ignored(3, AZURE),
    "azureblockblob_base_path": ignored("", AZURE),
    "azureblockblob_connection_timeout": ignored(20, AZURE),
    "azureblockblob_read_timeout": ignored(120, AZURE),
    "gcs_bucket": ignored(None, GCS),
    "gcs_project": ignored(None, GCS),
    "gcs_base_path": ignored("", GCS),
    "gcs_ttl": ignored(0, GCS),
    # -- remote control ---------------------------------------------------------------------------
    "control_queue_ttl": soon(CONTROL),
    "control_queue_expires": soon(CONTROL),
    "control_queue_exclusive": soon(CONTROL),
    "control_queue_durable": soon(CONTROL),
    "control_exchange": used(),
    # -- more result backends celeriac does not have ----------------------------------------------
    "couchbase_backend_settings": ignored(
        None, no_backend("Couchbase"), old="CELERY_COUCHBASE_BACKEND_SETTINGS"
    ),
    "arangodb_backend_settings": ignored(
        None, no_backend("ArangoDB"), old="CELERY_ARANGODB_BACKEND_SETTINGS"
    ),
    "mongodb_backend_settings": ignored(
        None, no_backend("MongoDB"), old="CELERY_MONGODB_BACKEND_SETTINGS"
    ),
    "cosmosdbsql_database_name": ignored("celerydb", COSMOS),
    "cosmosdbsql_collection_name": ignored("celerycol", COSMOS),
    "cosmosdbsql_consistency_level": ignored("Session", COSMOS),
    "cosmosdbsql_max_retry_attempts": ignored(9, COSMOS),
    "cosmosdbsql_max_retry_wait_time": ignored(30, COSMOS),
    # -- events -----------------------------------------------------------------------------------
    "event_queue_expires": soon(EVENTS, old="CELERY_EVENT_QUEUE_EXPIRES"),
    "event_queue_ttl": soon(EVENTS, old="CELERY_EVENT_QUEUE_TTL"),
    "event_queue_prefix": soon(EVENTS, old="CELERY_EVENT_QUEUE_PREFIX"),
    "event_queue_exclusive": soon(EVENTS, old="CELERY_EVENT_QUEUE_EXCLUSIVE"),
    "event_queue_durable": soon(EVENTS, old="CELERY_EVENT_QUEUE_DURABLE"),
    "event_serializer": soon(
        "not read: events are JSON, as Celery's default (and what Flower reads)",
        old="CELERY_EVENT_SERIALIZER",
    ),
    "event_exchange": used(old="CELERY_EVENT_EXCHANGE"),
    # -- Redis result backend: celeriac's takes its options elsewhere -----------------------------
    "redis_backend_use_ssl": ignored(
        None,
        "use a rediss:// result_backend, with ssl_* options in result_backend_transport_options",
        old="CELERY_REDIS_BACKEND_USE_SSL",
    ),
    "redis_db": ignored(None, REDIS_ADDRESS, old="CELERY_REDIS_DB"),
    "redis_host": ignored(None, REDIS_ADDRESS, old="CELERY_REDIS_HOST"),
    "redis_max_connections": ignored(None, REDIS_OPTION, old="CELERY_REDIS_MAX_CONNECTIONS"),
    "redis_username": ignored(None, REDIS_ADDRESS, old="CELERY_REDIS_USERNAME"),
    "redis_password": ignored(None, REDIS_ADDRESS, old="CELERY_REDIS_PASSWORD"),
    "redis_port": ignored(None, REDIS_ADDRESS, old="CELERY_REDIS_PORT"),
    "redis_socket_timeout": ignored(120.0, REDIS_OPTION, old="CELERY_REDIS_SOCKET_TIMEOUT"),
    "redis_socket_connect_timeout": ignored(
        None, REDIS_OPTION, old="CELERY_REDIS_SOCKET_CONNECT_TIMEOUT"
    ),
    "redis_retry_on_timeout": ignored(
        False,
        "the Redis result backend retries an idempotent operation once on a lost connection "
        "by itself",
        old="CELERY_REDIS_RETRY_ON_TIMEOUT",
    ),
    "redis_socket_keepalive": ignored(False, REDIS_OPTION, old="CELERY_REDIS_SOCKET_KEEPALIVE"),
    # -- results ----------------------------------------------------------------------------------
    "result_backend": used(old="CELERY_RESULT_BACKEND"),
    "result_cache_max": ignored(
        -1,
        "celeriac keeps no client-side cache of results to bound",
        old="CELERY_MAX_CACHED_RESULTS",
    ),
    "result_compression": soon(
        "not read yet: results are stored uncompressed",
        old="CELERY_RESULT_COMPRESSION",
    ),
    "result_exchange": ignored(
        "celeryresults",
        "rpc:// results go straight to the caller's reply queue: there is no result exchange",
        old="CELERY_RESULT_EXCHANGE",
    ),
    "result_exchange_type": ignored(
        "direct",
        "rpc:// results go straight to the caller's reply queue: there is no result exchange",
        old="CELERY_RESULT_EXCHANGE_TYPE",
    ),
    "result_expires": used(old="CELERY_TASK_RESULT_EXPIRES"),
    "result_max_bytes": used(own=True),
    "result_chord_expires": ignored(
        None,
        "a chord's counter lives as long as results do (result_expires)",
        old="CELERY_RESULT_CHORD_EXPIRES",
    ),
    "result_failure_expires": ignored(
        None,
        "not supported yet: failures expire after result_expires like any result",
        old="CELERY_RESULT_FAILURE_EXPIRES",
    ),
    "result_persistent": ignored(
        None,
        "rpc:// replies are sent non-persistent: they are meant for a caller that is waiting",
        old="CELERY_RESULT_PERSISTENT",
    ),
    "result_extended": used(old="CELERY_RESULT_EXTENDED"),
    "result_serializer": used(old="CELERY_RESULT_SERIALIZER"),
    "result_backend_transport_options": used(old="CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS"),
    "result_chord_retry_interval": ignored(
        1.0,
        "celeriac joins a chord by counting finished tasks, never by polling: no interval",
        old="CELERY_RESULT_CHORD_RETRY_INTERVAL",
    ),
    "result_chord_join_timeout": soon(
        "not read yet: a chord's body is sent once every header result is stored, so its "
        "join does not wait",
        old="CELERY_RESULT_CHORD_JOIN_TIMEOUT",
    ),
    "result_backend_max_sleep_between_retries_ms": ignored(
        10000, BACKEND_RETRY, old="CELERY_RESULT_BACKEND_MAX_SLEEP_BETWEEN_RETRIES_MS"
    ),
    "result_backend_max_retries": ignored(
        float("inf"), BACKEND_RETRY, old="CELERY_RESULT_BACKEND_MAX_RETRIES"
    ),
    "result_backend_base_sleep_between_retries_ms": ignored(
        10, BACKEND_RETRY, old="CELERY_RESULT_BACKEND_BASE_SLEEP_BETWEEN_RETRIES_MS"
    ),
    "result_backend_always_retry": ignored(
        False, BACKEND_RETRY, old="CELERY_RESULT_BACKEND_ALWAYS_RETRY"
    ),
    "elasticsearch_retry_on_timeout": ignored(
        None, ELASTIC, old="CELERY_ELASTICSEARCH_RETRY_ON_TIMEOUT"
    ),
    "elasticsearch_max_retries": ignored(None, ELASTIC, old="CELERY_ELASTICSEARCH_MAX_RETRIES"),
    "elasticsearch_timeout": ignored(None, ELASTIC, old="CELERY_ELASTICSEARCH_TIMEOUT"),
    "elasticsearch_save_meta_as_text": ignored(
        True, ELASTIC, old="CELERY_ELASTICSEARCH_SAVE_META_AS_TEXT"
    ),
    # -- message signing --------------------------------------------------------------------------
    "security_certificate": used(old="CELERY_SECURITY_CERTIFICATE"),
    "security_cert_store": used(old="CELERY_SECURITY_CERT_STORE"),
    "security_key": used(old="CELERY_SECURITY_KEY"),
    "security_key_password": used(old="CELERY_SECURITY_KEY_PASSWORD"),
    "security_digest": ignored("sha256", SIGNING, old="CELERY_SECURITY_DIGEST"),
    # -- SQLAlchemy result backend ----------------------------------------------------------------
    "database_url": ignored(None, DATABASE, old="CELERY_RESULT_DBURI"),
    "database_engine_options": ignored(
        {"pool_pre_ping": True, "pool_recycle": 3600}, DATABASE, old="CELERY_RESULT_ENGINE_OPTIONS"
    ),
    "database_engine_callback": ignored(None, DATABASE),
    "database_short_lived_sessions": ignored(
        False, DATABASE, old="CELERY_RESULT_DB_SHORT_LIVED_SESSIONS"
    ),
    "database_table_schemas": ignored(None, DATABASE),
    "database_table_names": ignored(None, DATABASE, old="CELERY_RESULT_DB_TABLENAMES"),
    "database_create_tables_at_setup": ignored(True, DATABASE),
    # -- tasks ------------------------------------------------------------------------------------
    "task_acks_late": used(old="CELERY_ACKS_LATE"),
    "task_acks_on_failure_or_timeout": used(old="CELERY_ACKS_ON_FAILURE_OR_TIMEOUT"),
    "task_acks_on_failure": soon(
        "not read yet: task_acks_on_failure_or_timeout decides", old="CELERY_ACKS_ON_FAILURE"
    ),
    "task_acks_on_timeout": soon(
        "not read yet: task_acks_on_failure_or_timeout decides", old="CELERY_ACKS_ON_TIMEOUT"
    ),
    "task_always_eager": used(old="CELERY_ALWAYS_EAGER"),
    "task_annotations": used(old="CELERY_ANNOTATIONS"),
    "task_compression": used(old="CELERY_MESSAGE_COMPRESSION"),
    "task_create_missing_queues": used(old="CELERY_CREATE_MISSING_QUEUES"),
    "task_create_missing_queue_type": ignored(
        "classic",
        "celeriac declares classic queues; declare a quorum queue in task_queues with "
        "queue_arguments={'x-queue-type': 'quorum'}",
        old="CELERY_CREATE_MISSING_QUEUE_TYPE",
    ),
    "task_create_missing_queue_exchange_type": used(
        old="CELERY_CREATE_MISSING_QUEUE_EXCHANGE_TYPE"
    ),
    "task_inherit_parent_priority": soon(
        "not read yet: a subtask does not inherit its parent's priority",
        old="CELERY_INHERIT_PARENT_PRIORITY",
    ),
    "task_default_delivery_mode": soon(
        "not read yet: messages on RabbitMQ are persistent",
        old="CELERY_DEFAULT_DELIVERY_MODE",
    ),
    "task_default_queue": used(old="CELERY_DEFAULT_QUEUE"),
    "task_default_queue_type": ignored(
        "classic",
        "celeriac declares classic queues; declare a quorum queue in task_queues with "
        "queue_arguments={'x-queue-type': 'quorum'}",
        old="CELERY_DEFAULT_QUEUE_TYPE",
    ),
    "task_default_exchange": used(old="CELERY_DEFAULT_EXCHANGE"),
    "task_default_exchange_type": used(old="CELERY_DEFAULT_EXCHANGE_TYPE"),
    "task_default_routing_key": used(old="CELERY_DEFAULT_ROUTING_KEY"),
    "task_default_rate_limit": used(old="CELERY_DEFAULT_RATE_LIMIT"),
    "task_default_priority": used(old="CELERY_DEFAULT_PRIORITY"),
    "task_eager_propagates": used(old="CELERY_EAGER_PROPAGATES_EXCEPTIONS"),
    "task_ignore_result": used(old="CELERY_IGNORE_RESULT"),
    "task_store_eager_result": used(old="CELERY_STORE_EAGER_RESULT"),
    "task_protocol": ignored(
        2, "celeriac always speaks Celery's message protocol 2", old="CELERY_TASK_PROTOCOL"
    ),
    "task_publish_retry": used(old="CELERY_TASK_PUBLISH_RETRY"),
    "task_publish_retry_policy": used(old="CELERY_TASK_PUBLISH_RETRY_POLICY"),
    "task_queues": used(old="CELERY_QUEUES"),
    "task_queue_max_priority": used(old="CELERY_QUEUE_MAX_PRIORITY"),
    "task_reject_on_worker_lost": used(old="CELERY_REJECT_ON_WORKER_LOST"),
    "task_retry_on_worker_lost": ignored(
        False,
        "not supported yet: a task whose worker process dies fails with WorkerLostError, or "
        "is requeued when acks_late with task_reject_on_worker_lost",
        old="CELERY_RETRY_ON_WORKER_LOST",
    ),
    "task_remote_tracebacks": soon(
        "not read yet: the worker's traceback is in AsyncResult.traceback, not in the error raised",
        old="CELERY_REMOTE_TRACEBACKS",
    ),
    "task_repr_maxlevels": ignored(
        3,
        "celeriac bounds argsrepr and kwargsrepr by length, not by nesting depth",
        old="CELERY_REPR_MAXLEVELS",
    ),
    "task_routes": used(old="CELERY_ROUTES"),
    "task_send_sent_event": used(old="CELERY_SEND_TASK_SENT_EVENT"),
    "task_serializer": used(old="CELERY_TASK_SERIALIZER"),
    "task_soft_time_limit": used(old="CELERYD_TASK_SOFT_TIME_LIMIT"),
    "task_time_limit": used(old="CELERYD_TASK_TIME_LIMIT"),
    "task_store_errors_even_if_ignored": used(old="CELERY_STORE_ERRORS_EVEN_IF_IGNORED"),
    "task_track_started": used(old="CELERY_TRACK_STARTED"),
    "task_allow_error_cb_on_chord_header": ignored(
        False,
        "not supported: a failed chord header task calls the body's link_error",
        old="CELERY_ALLOW_ERROR_CB_ON_CHORD_HEADER",
    ),
    "task_default_retry_delay": used(own=True),
    "task_max_retries": used(own=True),
    # -- worker -----------------------------------------------------------------------------------
    "worker_agent": ignored(None, "celeriac has no worker agent plug-in", old="CELERYD_AGENT"),
    "worker_autoscaler": used(old="CELERYD_AUTOSCALER"),
    "worker_cancel_long_running_tasks_on_connection_loss": soon(
        "not read yet: running tasks are not cancelled when the broker connection is lost",
        old="CELERYD_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS",
    ),
    "worker_soft_shutdown_timeout": ignored(
        0.0,
        "a warm shutdown lets running tasks finish, up to worker_shutdown_timeout",
        old="CELERYD_SOFT_SHUTDOWN_TIMEOUT",
    ),
    "worker_enable_soft_shutdown_on_idle": ignored(
        False,
        "a warm shutdown lets running tasks finish, up to worker_shutdown_timeout",
        old="CELERYD_ENABLE_SOFT_SHUTDOWN_ON_IDLE",
    ),
    "worker_concurrency": used(old="CELERYD_CONCURRENCY"),
    "worker_consumer": ignored(
        "celery.worker.consumer:Consumer",
        "celeriac's consumer is not replaceable; add worker components (app.components) instead",
        old="CELERYD_CONSUMER",
    ),
    "worker_direct": soon(
        "not read yet: workers have no queue of their own", old="CELERY_WORKER_DIRECT"
    ),
    "worker_disable_rate_limits": soon(
        "not read yet: rate limits always apply", old="CELERY_DISABLE_RATE_LIMITS"
    ),
    "worker_deduplicate_successful_tasks": ignored(
        False,
        "not supported: a redelivered task runs again without asking the result backend",
        old="CELERYD_DEDUPLICATE_SUCCESSFUL_TASKS",
    ),
    "worker_enable_remote_control": used(old="CELERY_ENABLE_REMOTE_CONTROL"),
    "worker_hijack_root_logger": used(old="CELERYD_HIJACK_ROOT_LOGGER"),
    "worker_log_color": ignored(
        None, "celeriac's log lines are not coloured", old="CELERYD_LOG_COLOR"
    ),
    "worker_log_datefmt": used(old="CELERYD_LOG_DATEFMT"),
    "worker_log_format": used(old="CELERYD_LOG_FORMAT"),
    "worker_lost_wait": ignored(
        10.0,
        "celeriac learns at once that a prefork child died: its pipe closes",
        old="CELERYD_WORKER_LOST_WAIT",
    ),
    "worker_max_memory_per_child": used(old="CELERYD_MAX_MEMORY_PER_CHILD"),
    "worker_max_tasks_per_child": used(old="CELERYD_MAX_TASKS_PER_CHILD"),
    "worker_pool": used(old="CELERYD_POOL"),
    "worker_pool_putlocks": ignored(
        True,
        "the consumer never blocks on the pool: it fetches only what free slots can take",
        old="CELERYD_POOL_PUTLOCKS",
    ),
    "worker_pool_restarts": ignored(
        False,
        "celeriac has no pool_restart command; run the worker with --reload in development",
        old="CELERYD_POOL_RESTARTS",
    ),
    "worker_pool_start_method": used(old="CELERYD_POOL_START_METHOD"),
    "worker_proc_alive_timeout": ignored(
        4.0,
        "a prefork child reports when it is ready, or why it could not start: no timeout",
        old="CELERYD_PROC_ALIVE_TIMEOUT",
    ),
    "worker_prefetch_multiplier": used(old="CELERYD_PREFETCH_MULTIPLIER"),
    "worker_eta_task_limit": ignored(
        None, DELAYS + ": there is no buffer of eta tasks to bound", old="CELERYD_ETA_TASK_LIMIT"
    ),
    "worker_enable_prefetch_count_reduction": ignored(
        True,
        "celeriac's prefetch is its free slots times worker_prefetch_multiplier at every fetch",
        old="CELERYD_ENABLE_PREFETCH_COUNT_REDUCTION",
    ),
    "worker_disable_prefetch": ignored(
        False,
        "celeriac's prefetch is its free slots times worker_prefetch_multiplier: set that to 1 "
        "for the least",
        old="CELERYD_DISABLE_PREFETCH",
    ),
    "worker_redirect_stdouts": used(old="CELERY_REDIRECT_STDOUTS"),
    "worker_redirect_stdouts_level": used(old="CELERY_REDIRECT_STDOUTS_LEVEL"),
    "worker_send_task_events": used(old="CELERY_SEND_EVENTS"),
    "worker_state_db": used(old="CELERYD_STATE_DB"),
    "worker_task_log_datefmt": soon(LOGS, old="CELERYD_TASK_LOG_DATEFMT"),
    "worker_task_log_format": soon(LOGS, old="CELERYD_TASK_LOG_FORMAT"),
    "worker_timer": ignored(
        None, "celeriac's timer is the worker's event loop: nothing to replace", old="CELERYD_TIMER"
    ),
    "worker_timer_precision": ignored(
        1.0,
        "celeriac's timer is the worker's event loop: it has no precision to set",
        old="CELERYD_TIMER_PRECISION",
    ),
    "worker_detect_quorum_queues": ignored(
        True,
        "celeriac does not look for quorum queues to adapt its RabbitMQ prefetch",
        old="CELERYD_DETECT_QUORUM_QUEUES",
    ),
    "worker_shutdown_timeout": used(own=True),
    "worker_lease_renewal_interval": used(own=True),
    "worker_fetch_stall_timeout": used(own=True),
    "worker_prefork_fetch": used(own=True),
    "worker_revoke_expires": used(own=True),
}

#: Celery's pre-4.0 upper-case names to the current ones (``CELERY_ALWAYS_EAGER`` ->
#: ``task_always_eager``), one per Celery setting.
OLD_NAMES: dict[str, str] = {
    (entry.old or name.upper()): name for name, entry in TABLE.items() if entry.celery
}

#: The names accepted and kept without effect, and the value each reads back until set.
NO_EFFECT_DEFAULTS: dict[str, Any] = {
    name: entry.default for name, entry in TABLE.items() if entry.kind is Kind.NO_EFFECT
}
