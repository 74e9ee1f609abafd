"""Tasks of the chaos suite; its workers run ``-A tests.chaos.chaosapp:app``.

Every run of every task leaves a row in ``chaos_runs``: inserted as the task starts
(job id, attempt, retries, the process running it and that process's parent, the worker's
name, the database's clock_timestamp()) and completed as it ends. A run killed by the chaos
loop keeps ``ended`` NULL; the suite takes its end from ``chaos_kills``.

The rows are written on the task's own connection (application_name ``chaos task``, which
the chaos loop never terminates), retried through outages with an idempotent statement
keyed by a run id made here, so that a server restart neither loses a row nor doubles one.

Settings come from PGQUEUE_CHAOS_CONF (JSON, app.conf names), so each test tunes the
workers' heartbeat, rescue and grace without a second app module.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from typing import Any

import psycopg

from pgqueue import PgQueue

# Settings every chaos worker shares: a killed prefork child's acks_late job runs again
# (so a child kill must be explained like a worker kill), and lost workers are noticed soon.
BASE_CONF: dict[str, Any] = {
    "task_reject_on_worker_lost": True,
    "worker_rescue_interval": 0.5,
    "worker_heartbeat_interval": 1.0,
    "worker_poll_interval": 2.0,
    "task_max_retries": 20,
}


_OVERRIDES = json.loads(os.environ.get("PGQUEUE_CHAOS_CONF") or "{}")
app = PgQueue("chaos", **{**BASE_CONF, **_OVERRIDES})

RUNS_DDL = """
CREATE TABLE IF NOT EXISTS public.chaos_runs (
    run_id  uuid PRIMARY KEY,
    job_id  uuid NOT NULL,
    task    text NOT NULL,
    attempt integer NOT NULL,
    retries integer NOT NULL,
    pid     integer NOT NULL,   -- the process that ran it: a prefork child, else the worker
    ppid    integer NOT NULL,   -- its parent: the prefork worker, else the test
    worker  text NOT NULL,      -- the worker's name
    started timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended   timestamptz,
    outcome text                -- 'ok', or 'retry' when the run asked for another attempt
);
CREATE INDEX IF NOT EXISTS chaos_runs_job_idx ON public.chaos_runs (job_id);
"""

_local = threading.local()


class Flaky(Exception):
    """Raised by the failing-then-retrying tasks on their first attempts."""


def _connection() -> Any:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed or getattr(_local, "pid", None) != os.getpid():
        conn = psycopg.connect(
            os.environ["PGQUEUE_DSN"],
            autocommit=True,
            application_name="chaos task",
            connect_timeout=5,
        )
        conn.execute(
            "SELECT set_config('synchronous_commit', %s, false)",
            (os.environ.get("PGQUEUE_CHAOS_RECORD_SYNC", "on"),),
        )
        _local.conn, _local.pid = conn, os.getpid()
    return conn


def _write(statement: str, params: dict[str, Any]) -> None:
    """Run an idempotent statement, reconnecting through an outage of up to two minutes."""
    deadline = time.monotonic() + 120
    while True:
        try:
            _connection().execute(statement, params)
            return
        except psycopg.OperationalError:
            _local.conn = None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class _Run:
    def __init__(self, task: Any) -> None:
        request = task.request
        self.id = str(uuid.uuid4())
        _write(
            "INSERT INTO public.chaos_runs"
            " (run_id, job_id, task, attempt, retries, pid, ppid, worker)"
            " VALUES (%(run)s, %(job)s, %(task)s, %(attempt)s, %(retries)s, %(pid)s,"
            " %(ppid)s, %(worker)s) ON CONFLICT (run_id) DO NOTHING",
            {
                "run": self.id,
                "job": request.id,
                "task": task.name,
                "attempt": request.attempt,
                "retries": request.retries,
                "pid": os.getpid(),
                "ppid": os.getppid(),
                "worker": request.hostname or "",
            },
        )

    def end(self, outcome: str = "ok") -> None:
        _write(
            "UPDATE public.chaos_runs SET ended = clock_timestamp(), outcome = %(outcome)s"
            " WHERE run_id = %(run)s AND ended IS NULL",
            {"run": self.id, "outcome": outcome},
        )


@app.task(name="chaos.short", bind=True)
def short(self: Any) -> str:
    _Run(self).end()
    return "ok"


@app.task(name="chaos.slow", bind=True)
def slow(self: Any, seconds: float) -> float:
    run = _Run(self)
    time.sleep(seconds)
    run.end()
    return seconds


@app.task(
    name="chaos.flaky",
    bind=True,
    autoretry_for=(Flaky,),
    retry_kwargs={"countdown": 0.1},
)
def flaky(self: Any, failures: int) -> int:
    """Fails its first ``failures`` attempts (autoretry), then succeeds."""
    run = _Run(self)
    if self.request.retries < failures:
        run.end("retry")
        raise Flaky(f"attempt {self.request.retries} fails on purpose")
    run.end()
    return self.request.retries


@app.task(name="chaos.flaky_self", bind=True)
def flaky_self(self: Any, failures: int) -> int:
    """Like flaky, through ``self.retry``."""
    run = _Run(self)
    if self.request.retries < failures:
        run.end("retry")
        raise self.retry(countdown=0.1)
    run.end()
    return self.request.retries


@app.task(name="chaos.once", bind=True, acks_late=False)
def once(self: Any, seconds: float) -> float:
    """At-most-once: a lost run ends FAILURE, it never runs again."""
    run = _Run(self)
    time.sleep(seconds)
    run.end()
    return seconds


@app.task(name="chaos.first_slow", bind=True)
def first_slow(self: Any, seconds: float) -> int:
    """Runs ``seconds`` on its first claim, at once on any later one (the partition test:
    the cut worker's copy is still running when another worker's copy has finished)."""
    run = _Run(self)
    if self.request.attempt <= 1:
        time.sleep(seconds)
    run.end()
    return int(self.request.attempt)
