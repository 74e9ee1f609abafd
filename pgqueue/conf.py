"""App configuration, with Celery's setting names where Celery has one."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, MutableMapping
from typing import Any

from . import celery_settings

DEFAULTS: dict[str, Any] = {
    # Where jobs go when neither the call, a route nor the task names a queue.
    "task_default_queue": "default",
    "task_default_priority": 0,
    # {"name or glob": {"queue": ..., "priority": ...}}, a list of such dicts, or a callable
    # (name, args, kwargs, options) -> dict | None.
    "task_routes": None,
    # True (pgqueue's default): a job whose worker dies runs again elsewhere (at-least-once).
    # False: such a job ends FAILURE with WorkerLostError (at-most-once).
    "task_acks_late": True,
    # A prefork child that dies mid-task (OOM killer, SIGKILL, a crash in C code): False, as
    # in Celery, ends the job FAILURE with WorkerLostError; True runs it again (counted as a
    # retry, within max_retries) when the job is acks_late.
    "task_reject_on_worker_lost": False,
    "task_ignore_result": False,
    "task_time_limit": None,
    "task_soft_time_limit": None,
    "task_default_retry_delay": 180,
    # The largest a call's arguments (args and kwargs, as JSON) or a task's result may be, in
    # bytes; None for no limit. Bigger ones are refused at enqueue (EncodeError), or end the
    # job FAILURE. Postgres caps a jsonb value near 256 MB; big payloads also cost a worker
    # their size in memory several times over, at the claim and in the pool.
    "task_max_payload_size": 64 * 1024 * 1024,
    "task_max_retries": 3,
    "worker_concurrency": None,  # None: the number of CPUs
    "worker_prefetch_multiplier": 4,
    "worker_pool": "prefork",
    # Jobs per prefork child marked STARTED ahead and held by the worker, so that a child
    # finishing a job starts the next without waiting for a round trip (acks_late jobs
    # only). Off by default: a job held ahead counts as started, so revoke() without
    # terminate no longer stops it (Celery's default revokes a reserved task). 1: CPU-bound
    # work at -c 2 gains about a fifth (benchmarks/RESULTS.md).
    "worker_prefork_ahead": 0,
    # Seconds between fallback polls when no notification arrives.
    "worker_poll_interval": 5.0,
    # Liveness: each worker holds a session advisory lock and beats every interval. A worker
    # whose lock has been gone (its connection died) for longer than its
    # worker_reconnect_grace is lost; so is one whose lock still looks held but whose
    # heartbeat is older than worker_lost_timeout (a cut network, a frozen process).
    "worker_heartbeat_interval": 2.0,
    "worker_lost_timeout": 20.0,
    # Seconds a worker that lost its connection (backends terminated, a network blip, a
    # database restart) has to reconnect and keep its jobs: within it, nothing it runs is
    # run again elsewhere. A killed worker's jobs wait this long (plus up to one
    # worker_rescue_interval) before they run again; 0 rescues them at once.
    "worker_reconnect_grace": 10.0,
    # How often some worker looks for lost workers and expired jobs, and deletes old results.
    "worker_rescue_interval": 2.0,
    "result_cleanup_interval": 60.0,
    # Postgres' synchronous_commit for the worker's own writes (claims, outcomes). "off"
    # skips the WAL flush wait: a database crash may then forget the last fraction of a
    # second of them, and those jobs run again (still at-least-once; enqueues stay durable).
    "worker_synchronous_commit": "on",
    # A DSN straight to Postgres for the connections that need a session of their own when
    # the app's DSN goes through a pooler such as PgBouncer in transaction mode: the
    # worker's claims, liveness lock, LISTEN and housekeeping, beat, AsyncResult.get()'s
    # LISTEN. None: PGQUEUE_LISTEN_DSN if set, else the app's DSN (see pgqueue.pooler).
    "listen_dsn": None,
    # Seconds a finished result is kept; None keeps results for ever.
    "result_expires": dt.timedelta(days=1),
    "timezone": "UTC",
    "imports": (),
    "beat_schedule": {},
    # Longest a beat sleeps before re-reading pgqueue.periodic_tasks. Edits wake it at once
    # (NOTIFY); this bounds the delay should a notification be missed, and how long an
    # entry that failed to send waits before it is tried again.
    "beat_max_loop_interval": 60.0,
}


def is_setting(name: str) -> bool:
    """Whether ``name`` is a pgqueue or a Celery setting (lower case)."""
    return name in DEFAULTS or name in celery_settings.CELERY_SETTINGS


class Settings(MutableMapping[str, Any]):
    """``app.conf``: read and set by attribute (``app.conf.timezone``) or by key.

    Celery's setting names are read through ``pgqueue.celery_settings``: one pgqueue has
    is set, one it ignores warns once (and reads back as given), one it refuses raises
    ConfigurationError. Other unknown names are refused so that a typo does not silently do
    nothing.
    """

    def __init__(self, **overrides: Any) -> None:
        object.__setattr__(self, "_data", dict(DEFAULTS))
        # Celery settings given but ignored, by name: reported by check-celery-config.
        object.__setattr__(self, "ignored", {})
        self.update(overrides)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            pass
        try:
            return self.ignored[name]
        except KeyError:
            raise AttributeError(f"unknown pgqueue setting {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in DEFAULTS and key.isupper():
            key = celery_settings.new_name(key, is_setting) or key
        if key not in DEFAULTS and key in celery_settings.CELERY_SETTINGS:
            target = celery_settings.apply(key, value)
            if target is None:
                self.ignored[key] = value
                return
            key = target
        if key not in DEFAULTS:
            raise KeyError(
                f"unknown pgqueue setting {key!r}; known settings: {', '.join(sorted(DEFAULTS))}"
            )
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        self._data[key] = DEFAULTS[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def result_expires_seconds(self) -> float | None:
        value = self._data["result_expires"]
        if value is None:
            return None
        if isinstance(value, dt.timedelta):
            return value.total_seconds()
        return float(value)
