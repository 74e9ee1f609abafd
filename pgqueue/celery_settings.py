"""Every Celery setting name, and what pgqueue does with it: one table.

A Celery project's configuration is read through it (``app.conf.update``,
``app.config_from_object``, ``PgQueue(**settings)``, ``pgqueue check-celery-config``):

- *supported*: set on ``app.conf`` under ``target`` (usually the same name), with pgqueue's
  meaning given in the note;
- *ignored*: nothing in pgqueue corresponds (no broker, no AMQP, results in PostgreSQL);
  setting one warns once per process with the reason (``IgnoredSettingWarning``);
- *refused*: ignoring it would silently change what the project relies on (a pickle
  serializer, eager mode, message signing); setting one raises ConfigurationError naming
  the fix.

Values listed in ``harmless`` mean what pgqueue does anyway: an ignored or refused setting
given such a value is accepted silently (``task_serializer="json"``,
``task_always_eager=False``). Celery's old upper-case names (``CELERY_ROUTES``,
``BROKER_URL``, ``CELERYD_CONCURRENCY``) map to the new ones by ``new_name``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .exceptions import ConfigurationError, IgnoredSettingWarning

Status = Literal["supported", "ignored", "refused"]


@dataclass(frozen=True)
class CelerySetting:
    """What pgqueue does with one Celery setting."""

    status: Status
    # supported: pgqueue's meaning; ignored: why; refused: why, and the fix
    note: str
    # the pgqueue setting a supported one sets
    target: str | None = None
    # values accepted silently although the setting is ignored or refused, and how to say so
    harmless: Callable[[Any], bool] | None = None
    harmless_text: str = ""


def _supported(note: str, target: str | None = None) -> CelerySetting:
    return CelerySetting("supported", note, target)


def _ignored(note: str, harmless: Callable[[Any], bool] | None = None, text: str = "") -> Any:
    return CelerySetting("ignored", note, None, harmless, text)


def _refused(note: str, harmless: Callable[[Any], bool] | None = None, text: str = "") -> Any:
    return CelerySetting("refused", note, None, harmless, text)


def _is_json(value: Any) -> bool:
    return isinstance(value, str) and value.lower() in ("json", "application/json")


def _only_json(value: Any) -> bool:
    if isinstance(value, str):
        return _is_json(value)
    try:
        return all(_is_json(v) for v in value)
    except TypeError:
        return False


def _false(value: Any) -> bool:
    return value is False or value is None


def _true(value: Any) -> bool:
    return value is True


def _none(value: Any) -> bool:
    return value is None


_BROKER = "pgqueue's broker is PostgreSQL (dsn= or PGQUEUE_DSN)"
_CHORD = "a chord's counter is a row: nothing polls, joins or expires it"
_BACKEND = "results are kept in PostgreSQL (pgqueue.results)"
_AMQP = "AMQP routing: a pgqueue queue is a name, routes set it (task_routes)"
_EVENTS = "no event stream: pgqueue status/workers/jobs read the database"
_LOGGING = "pgqueue logs one line per job event through the logging module; configure it there"
_JSON = (
    "pgqueue stores arguments and results as JSON (jsonb); make them JSON-serialisable "
    "and leave this setting out"
)

# Result backends other than PostgreSQL: every setting of each is ignored.
_BACKEND_FAMILIES = {
    "arangodb": ("backend_settings",),
    "azureblockblob": (
        "base_path", "connection_timeout", "container_name", "read_timeout",
        "retry_increment_base", "retry_initial_backoff_sec", "retry_max_attempts",
    ),
    "cassandra": (
        "auth_kwargs", "auth_provider", "bundle_path", "entry_ttl", "keyspace", "options",
        "port", "read_consistency", "servers", "table", "write_consistency",
    ),
    "cosmosdbsql": (
        "collection_name", "consistency_level", "database_name", "max_retry_attempts",
        "max_retry_wait_time",
    ),
    "couchbase": ("backend_settings",),
    "database": (
        "create_tables_at_setup", "engine_callback", "engine_options", "short_lived_sessions",
        "table_names", "table_schemas", "url",
    ),
    "elasticsearch": ("max_retries", "retry_on_timeout", "save_meta_as_text", "timeout"),
    "gcs": ("base_path", "bucket", "project", "ttl"),
    "mongodb": ("backend_settings",),
    "redis": (
        "backend_use_ssl", "db", "host", "max_connections", "password", "port",
        "retry_on_timeout", "socket_connect_timeout", "socket_keepalive", "socket_timeout",
        "username",
    ),
    "s3": (
        "access_key_id", "base_path", "bucket", "endpoint_url", "region", "secret_access_key",
    ),
    "cache": ("backend", "backend_options"),
}  # fmt: skip

_BROKER_SETTINGS = (
    "channel_error_retry", "connection_max_retries", "connection_retry",
    "connection_retry_on_startup", "connection_timeout", "failover_strategy", "heartbeat",
    "heartbeat_checkrate", "host", "login_method", "native_delayed_delivery_queue_type",
    "password", "pool_acquire_timeout", "pool_limit", "port", "read_url", "transport",
    "transport_options", "url", "use_ssl", "user", "vhost", "write_url",
)  # fmt: skip

_AMQP_SETTINGS = (
    "control_exchange", "control_queue_durable", "control_queue_exclusive",
    "control_queue_expires", "control_queue_ttl", "result_exchange", "result_exchange_type",
    "task_create_missing_queue_exchange_type", "task_create_missing_queue_type",
    "task_default_delivery_mode", "task_default_exchange", "task_default_exchange_type",
    "task_default_queue_type", "task_default_routing_key", "task_queue_max_priority",
    "worker_detect_quorum_queues", "worker_direct",
)  # fmt: skip

_EVENT_SETTINGS = (
    "event_exchange", "event_queue_durable", "event_queue_exclusive", "event_queue_expires",
    "event_queue_prefix", "event_queue_ttl", "event_serializer", "task_send_sent_event",
    "worker_send_task_events", "worker_enable_remote_control", "beat_enable_remote_control",
    "beat_remote_control_max_tick_age",
)  # fmt: skip

_WORKER_INTERNALS = (
    "worker_agent", "worker_autoscaler", "worker_consumer", "worker_timer",
    "worker_timer_precision", "worker_pool_putlocks", "worker_pool_restarts",
    "worker_pool_start_method", "worker_proc_alive_timeout", "worker_state_db",
    "worker_disable_prefetch", "worker_enable_prefetch_count_reduction",
    "worker_eta_task_limit", "worker_deduplicate_successful_tasks",
)  # fmt: skip

CELERY_SETTINGS: dict[str, CelerySetting] = {
    # -- supported, same name and meaning ----------------------------------------------
    "task_default_queue": _supported("queue of a job no call, route or task names"),
    "task_default_priority": _supported("priority of a job that names none (higher first)"),
    "task_routes": _supported(
        "dict of name or glob -> queue or options, a list of such, or a callable"
    ),
    "task_acks_late": _supported(
        "true (pgqueue's default): a job whose worker dies runs again elsewhere"
    ),
    "task_reject_on_worker_lost": _supported("a job whose prefork child dies runs again"),
    "task_ignore_result": _supported("no result row is written"),
    "task_time_limit": _supported("hard time limit, seconds"),
    "task_soft_time_limit": _supported("SoftTimeLimitExceeded raised in the task, seconds"),
    "worker_concurrency": _supported("pool size (default: the number of CPUs)"),
    "worker_prefetch_multiplier": _supported("jobs claimed ahead per pool slot"),
    "worker_pool": _supported("prefork, threads or solo"),
    "result_expires": _supported("how long a result row is kept (seconds or timedelta)"),
    "timezone": _supported("zone of naive ETAs and of beat's cron fields"),
    "imports": _supported("modules the worker imports to find tasks"),
    "include": _supported("modules the worker imports to find tasks", target="imports"),
    "beat_schedule": _supported("periodic tasks, synced into pgqueue.periodic_tasks"),
    "beat_max_loop_interval": _supported("longest sleep of a beat, seconds"),
    # -- settings whose value matters: harmless values pass, others are refused ---------
    "task_serializer": _refused(_JSON, _is_json, "'json'"),
    "result_serializer": _refused(_JSON, _is_json, "'json'"),
    "accept_content": _refused(_JSON, _only_json, "['json']"),
    "result_accept_content": _refused(_JSON, _only_json, "['json']"),
    "task_always_eager": _refused(
        "pgqueue has no eager mode: call the task function directly (task(...)) in tests, "
        "or run a worker (pgqueue dev, or the worker fixture)",
        _false,
        "False",
    ),
    "task_annotations": _refused(
        "no annotations: give the options to the task decorator (@app.task(...))",
        _none,
        "None",
    ),
    "beat_scheduler": _refused(
        "beat's schedule is the pgqueue.periodic_tasks table: move the entries into "
        "beat_schedule or add them with `pgqueue beat add`",
        lambda v: v is None or str(v).startswith("celery.beat:"),
        "celery.beat:...",
    ),
    "security_key": _refused(
        "no message signing: restrict who may write pgqueue.jobs with the roles of "
        "sql/roles.sql (docs/roles.md)",
        _none,
        "None",
    ),
    "enable_utc": _ignored(
        "pgqueue keeps every time in UTC; naive times are read in `timezone`", _true, "True"
    ),
    "task_track_started": _ignored("pgqueue always records STARTED", _true, "True"),
    "task_create_missing_queues": _ignored("a queue is a name, never declared", _true, "True"),
    "task_publish_retry": _ignored(
        "an enqueue is one INSERT; its errors are raised", _false, "False"
    ),
    "worker_hijack_root_logger": _ignored(_LOGGING, _false, "False"),
    # -- ignored -----------------------------------------------------------------------
    "broker_url": _ignored(_BROKER),
    "result_backend": _ignored(_BACKEND),
    "task_default_rate_limit": _ignored("rate limits are not on this version of pgqueue"),
    "worker_disable_rate_limits": _ignored("rate limits are not on this version of pgqueue"),
    "task_compression": _ignored("jobs are rows; PostgreSQL compresses large values itself"),
    "result_compression": _ignored("results are rows; PostgreSQL compresses large values"),
    "task_protocol": _ignored("jobs are rows, not messages"),
    "task_publish_retry_policy": _ignored("an enqueue is one INSERT; its errors are raised"),
    "task_queues": _ignored("queues need no declaration: a worker serves those of -Q"),
    "task_inherit_parent_priority": _ignored("a job's priority is its call's, route's or task's"),
    "task_remote_tracebacks": _ignored("the traceback is stored in the result row"),
    "task_repr_maxlevels": _ignored("arguments are shown as JSON"),
    "task_store_errors_even_if_ignored": _ignored("ignore_result writes no result row at all"),
    "task_eager_propagates": _ignored("no eager mode (see task_always_eager)"),
    "task_store_eager_result": _ignored("no eager mode (see task_always_eager)"),
    "task_acks_on_failure_or_timeout": _ignored("a failed or timed-out job ends FAILURE"),
    "task_acks_on_failure": _ignored("a failed job ends FAILURE"),
    "task_acks_on_timeout": _ignored("a timed-out job ends FAILURE (or retries: autoretry_for)"),
    "task_retry_on_worker_lost": _ignored("see task_acks_late and task_reject_on_worker_lost"),
    "task_allow_error_cb_on_chord_header": _ignored(
        "a failed header member fails the chord; the callback's link_error runs"
    ),
    "result_backend_always_retry": _ignored(_BACKEND),
    "result_backend_base_sleep_between_retries_ms": _ignored(_BACKEND),
    "result_backend_max_retries": _ignored(_BACKEND),
    "result_backend_max_sleep_between_retries_ms": _ignored(_BACKEND),
    "result_backend_transport_options": _ignored(_BACKEND),
    "result_cache_max": _ignored("results are read from the database, not cached"),
    "result_chord_join_timeout": _ignored(_CHORD),
    "result_chord_retry_interval": _ignored(_CHORD),
    "result_chord_expires": _ignored(_CHORD),
    "result_extended": _ignored("the result row always names its task"),
    "result_persistent": _ignored("results are rows, durable once committed"),
    "result_failure_expires": _ignored("result_expires applies to every result"),
    "worker_max_tasks_per_child": _ignored("give `pgqueue worker --max-tasks-per-child`"),
    "worker_max_memory_per_child": _ignored("give `pgqueue worker --max-memory-per-child`"),
    "worker_lost_wait": _ignored("see worker_lost_timeout and worker_reconnect_grace"),
    "worker_cancel_long_running_tasks_on_connection_loss": _ignored(
        "running jobs keep running through worker_reconnect_grace"
    ),
    "worker_soft_shutdown_timeout": _ignored("a worker stopping finishes its running jobs"),
    "worker_enable_soft_shutdown_on_idle": _ignored("a worker stopping finishes its jobs"),
    "worker_log_color": _ignored(_LOGGING),
    "worker_log_datefmt": _ignored(_LOGGING),
    "worker_log_format": _ignored(_LOGGING),
    "worker_task_log_datefmt": _ignored(_LOGGING),
    "worker_task_log_format": _ignored(_LOGGING),
    "worker_redirect_stdouts": _ignored(_LOGGING),
    "worker_redirect_stdouts_level": _ignored(_LOGGING),
    "beat_schedule_filename": _ignored("beat keeps its state in pgqueue.periodic_tasks"),
    "beat_sync_every": _ignored("beat writes each tick in the transaction that sends it"),
    "beat_cron_starting_deadline": _ignored("missed ticks follow each entry's catch_up"),
    "security_certificate": _ignored("no message signing (see security_key)"),
    "security_cert_store": _ignored("no message signing (see security_key)"),
    "security_digest": _ignored("no message signing (see security_key)"),
    "security_key_password": _ignored("no message signing (see security_key)"),
    **{f"broker_{name}": _ignored(_BROKER) for name in _BROKER_SETTINGS if name != "url"},
    **{name: _ignored(_AMQP) for name in _AMQP_SETTINGS},
    **{name: _ignored(_EVENTS) for name in _EVENT_SETTINGS},
    **{name: _ignored("a worker internal of Celery's") for name in _WORKER_INTERNALS},
    **{
        f"{family}_{name}": _ignored(_BACKEND)
        for family, names in _BACKEND_FAMILIES.items()
        for name in names
    },
}

# Celery's old upper-case names that no prefix rule of new_name turns into the new one.
_OLD_NAMES = {
    "CELERYD_TASK_SOFT_TIME_LIMIT": "task_soft_time_limit",
    "CELERYD_TASK_TIME_LIMIT": "task_time_limit",
    "CELERYD_WORKER_LOST_WAIT": "worker_lost_wait",
    "CELERY_DISABLE_RATE_LIMITS": "worker_disable_rate_limits",
    "CELERY_EAGER_PROPAGATES_EXCEPTIONS": "task_eager_propagates",
    "CELERY_ENABLE_REMOTE_CONTROL": "worker_enable_remote_control",
    "CELERY_MAX_CACHED_RESULTS": "result_cache_max",
    "CELERY_MESSAGE_COMPRESSION": "task_compression",
    "CELERY_REDIRECT_STDOUTS": "worker_redirect_stdouts",
    "CELERY_REDIRECT_STDOUTS_LEVEL": "worker_redirect_stdouts_level",
    "CELERY_RESULT_DBURI": "database_url",
    "CELERY_RESULT_DB_SHORT_LIVED_SESSIONS": "database_short_lived_sessions",
    "CELERY_RESULT_DB_TABLENAMES": "database_table_names",
    "CELERY_RESULT_ENGINE_OPTIONS": "database_engine_options",
    "CELERY_SEND_EVENTS": "worker_send_task_events",
    "CELERY_SEND_TASK_SENT_EVENT": "task_send_sent_event",
    "CELERY_TASK_RESULT_EXPIRES": "result_expires",
}
_OLD_PREFIXES = (("CELERYBEAT_", "beat_"), ("CELERYD_", "worker_"), ("CELERY_", "task_"))


def new_name(key: str, known: Callable[[str], bool], namespace: str | None = None) -> str | None:
    """The lower-case setting an upper-case configuration name stands for, or None.

    ``known`` says whether a lower-case name is a setting. With ``namespace="CELERY"``
    (Django's idiom), ``CELERY_BROKER_URL`` is ``broker_url``; Celery's old names
    (``CELERY_ROUTES``, ``CELERYD_CONCURRENCY``, ``BROKER_URL``) are understood too.
    """
    if key in _OLD_NAMES:
        return _OLD_NAMES[key]
    candidates = []
    if namespace and key.startswith(namespace.upper() + "_"):
        candidates.append(key[len(namespace) + 1 :].lower())
    candidates.append(key.removeprefix("CELERY_").lower())
    for old, new in _OLD_PREFIXES:
        if key.startswith(old):
            candidates.append(new + key[len(old) :].lower())
    candidates.append(key.lower())
    return next((c for c in candidates if known(c)), None)


def describe(setting: CelerySetting) -> str:
    """The status as the settings table of docs/how-to/celery.md shows it."""
    if setting.status == "supported":
        return "supported" if setting.target is None else f"supported (as `{setting.target}`)"
    if setting.harmless_text:
        return f"{setting.status} (unless {setting.harmless_text})"
    return setting.status


_warned: set[str] = set()


def judge(name: str, value: Any) -> tuple[CelerySetting, bool]:
    """(the setting, whether ``value`` is harmless for it) for a Celery setting name."""
    setting = CELERY_SETTINGS[name]
    harmless = setting.harmless is not None and setting.harmless(value)
    return setting, harmless


def apply(name: str, value: Any) -> str | None:
    """What to do with a Celery setting pgqueue has no setting of that name for.

    Returns the pgqueue setting to set, or None when there is nothing to set (ignored:
    warns once per name per process). Raises ConfigurationError when refused, KeyError when
    ``name`` is no Celery setting.
    """
    setting, harmless = judge(name, value)
    if setting.status == "supported":
        return setting.target or name
    if harmless:
        return None
    if setting.status == "refused":
        raise ConfigurationError(f"Celery setting {name}={value!r} is refused: {setting.note}")
    if name not in _warned:
        _warned.add(name)
        warnings.warn(
            f"Celery setting {name!r} is ignored by pgqueue: {setting.note}",
            IgnoredSettingWarning,
            stacklevel=4,
        )
    return None


def table_markdown() -> str:
    """The table of docs/how-to/celery.md: one row per status and note; a family
    of settings that all share one (``broker_*``) is shown by its prefix."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name in sorted(CELERY_SETTINGS):
        setting = CELERY_SETTINGS[name]
        groups.setdefault((describe(setting), setting.note), []).append(name)
    rows = ["| Celery setting | pgqueue | why, or the fix |", "| --- | --- | --- |"]
    order = {"supported": 0, "refused": 1, "ignored": 2}
    for (status, note), names in sorted(groups.items(), key=lambda g: order[g[0][0].split()[0]]):
        shown = []
        for family in sorted({n.split("_")[0] for n in names}):
            members = [n for n in names if n.split("_")[0] == family]
            everyone = [n for n in CELERY_SETTINGS if n.split("_")[0] == family]
            if len(members) >= 3 and len(members) == len(everyone):
                shown.append(f"`{family}_*`")
            else:
                shown += [f"`{n}`" for n in members]
        rows.append(f"| {', '.join(shown)} | {status} | {note} |")
    return "\n".join(rows) + "\n"
