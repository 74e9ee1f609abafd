"""``pgqueue demo``: a tour in a few seconds, on a database it finds by itself.

    pgqueue demo            (or: python -m pgqueue.demo)

It migrates the database, queues a few tasks (one in a transaction that rolls back), starts a
real worker with an embedded beat (``pgqueue worker -A pgqueue.demo:app --beat``), and prints
what happened to each task. The database is ``--dsn`` / ``PGQUEUE_DSN`` if given, else database
``pgqueue_demo`` on a local server, else on the embedded server (``pgqueue[embedded]``); see
:func:`pgqueue.db.find_dsn`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import click
import psycopg

from . import queries
from .app import PgQueue
from .beat import list_entries
from .db import describe, find_dsn
from .exceptions import PgQueueError, TimeoutError
from .result import AsyncResult
from .schedules import crontab
from .task import Task

DATABASE = "pgqueue_demo"

app = PgQueue("demo")
app.conf.beat_schedule = {
    "demo-tick": {"task": "demo.tick", "schedule": 1.0, "tick_kwarg": "tick"},
    "demo-report": {"task": "demo.report", "schedule": crontab(minute="*"), "args": ("hourly",)},
}


@app.task(name="demo.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="demo.send_confirmation")
def send_confirmation(order_id: int) -> str:
    return f"confirmation for order {order_id} sent"


@app.task(name="demo.divide")
def divide(x: float, y: float) -> float:
    return x / y


@app.task(name="demo.charge", bind=True, max_retries=3)
def charge(self: Task, order_id: int) -> str:
    if self.request.retries == 0:
        raise self.retry(exc=ConnectionError("payment gateway timed out"), countdown=0.5)
    return f"order {order_id} charged after {self.request.retries} retry"


@app.task(name="demo.tick")
def tick(tick: str) -> str:
    return f"tick {tick}"


@app.task(name="demo.report")
def report(kind: str) -> str:
    return f"{kind} report"


def run(dsn: str | None = None, echo: Callable[[str], None] = click.echo) -> int:
    """Run the tour; returns the exit code."""
    started = time.monotonic()
    found = find_dsn(dsn, database=DATABASE)
    echo(f"database: {found.note or f'{describe(found.dsn)} (from --dsn or PGQUEUE_DSN)'}")
    # The app reads PGQUEUE_DSN, and so does the worker started below.
    os.environ["PGQUEUE_DSN"] = found.dsn
    applied = app.migrate()
    echo(f"schema: {f'applied {len(applied)} migration(s)' if applied else 'up to date'}")

    with psycopg.connect(found.dsn, autocommit=True) as conn:
        since = _one(conn, "demo_now")
        calls = _enqueue(conn, echo)
        worker, log_path = _start_worker(found.dsn)
        try:
            echo(f"\nstarted a worker with beat (pid {worker.pid}): {' '.join(_WORKER_ARGS)}")
            echo("results:")
            for label, result in calls:
                result.get(timeout=30, propagate=False)
                echo(f"  {label:<46} {_outcome(result)}")
            _wait(lambda: _ticks_since(conn, since) >= 2, 30, "two beat ticks")
            _show_beat(conn, since, echo)
            left = _one(conn, "demo_jobs_left", ids=[result.id for _, result in calls])
            echo(
                f"\njobs of this tour left in pgqueue.jobs: {left} "
                "(a job leaves the table as its result is written)"
            )
        except BaseException:
            _stop(worker)
            echo(f"worker log ({log_path}):\n{_tail(log_path)}")
            raise
        code = _stop(worker)
    os.unlink(log_path)
    echo(f"worker stopped (exit {code}); done in {time.monotonic() - started:.1f}s")
    if found.source == "embedded":
        echo("the embedded server keeps running for the next commands: `pgqueue dev down` stops it")
    return 0 if code == 0 else 1


def _enqueue(
    conn: psycopg.Connection[Any], echo: Callable[[str], None]
) -> list[tuple[str, AsyncResult]]:
    calls = [("add(2, 3)", add.delay(2, 3))]

    # A temporary table stands in for the application's own: an order row and its
    # confirmation job commit together, or roll back together.
    conn.execute("CREATE TEMP TABLE demo_orders (id integer PRIMARY KEY)")
    with app.transaction(conn):
        conn.execute("INSERT INTO demo_orders VALUES (1)")
        calls.append(("send_confirmation(1), transaction committed", send_confirmation.delay(1)))
    rolled_back: AsyncResult | None = None
    with contextlib.suppress(RuntimeError), app.transaction(conn):
        conn.execute("INSERT INTO demo_orders VALUES (2)")
        rolled_back = send_confirmation.delay(2)
        raise RuntimeError("card declined")
    assert rolled_back is not None  # the id outlives the rollback; the job does not
    calls.append(("divide(1, 0)", divide.delay(1, 0)))
    calls.append(("charge(1), retried once", charge.delay(1)))
    calls.append(("add(1, 1), countdown=2", add.apply_async((1, 1), countdown=2)))

    echo("\nqueued, before any worker runs:")
    for label, result in calls:
        echo(f"  {label:<46} {result.state:<8} job row: {_has_job(conn, result)}")
    orders = [r[0] for r in conn.execute("SELECT id FROM demo_orders ORDER BY id")]
    echo(
        f"  {'send_confirmation(2), transaction rolled back':<46} {rolled_back.state:<8} "
        f"job row: {_has_job(conn, rolled_back)}  (orders table holds {orders}: "
        f"the rollback took the order and its job)"
    )
    return calls


_WORKER_ARGS = ["pgqueue", "worker", "-A", "pgqueue.demo:app", "--beat", "-c", "2"]


def _start_worker(dsn: str) -> tuple[subprocess.Popen[bytes], str]:
    fd, log_path = tempfile.mkstemp(prefix="pgqueue-demo-worker-", suffix=".log")
    with os.fdopen(fd, "w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "pgqueue.cli", "--dsn", dsn, *_WORKER_ARGS[1:]],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PGQUEUE_DSN": dsn},
        )
    return worker, log_path


def _stop(worker: subprocess.Popen[bytes]) -> int:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    try:
        return worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()
        return worker.wait()


def _show_beat(
    conn: psycopg.Connection[Any], since: dt.datetime, echo: Callable[[str], None]
) -> None:
    echo("\nbeat (the periodic_tasks table, as `pgqueue beat list` shows it):")
    for entry in list_entries(conn):
        when = entry.next_run_at.isoformat(timespec="seconds") if entry.next_run_at else "-"
        echo(
            f"  {entry.name:<12} {entry.schedule.describe():<24} "
            f"sent {entry.total_run_count} time(s), next at {when}"
        )
    echo(f"  demo.tick has run {_ticks_since(conn, since)} time(s) during this tour")


def _one(conn: psycopg.Connection[Any], query: str, **params: Any) -> Any:
    """The first value of named query ``query``."""
    row = conn.execute(queries.get(query), params).fetchone()
    return row[0] if row else None


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the demo timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def _has_job(conn: psycopg.Connection[Any], result: AsyncResult) -> str:
    return "yes" if _one(conn, "demo_has_job", id=result.id) else "no"


def _ticks_since(conn: psycopg.Connection[Any], since: dt.datetime) -> int:
    return int(_one(conn, "demo_ticks_since", since=since))


def _outcome(result: AsyncResult) -> str:
    value = result.result
    shown = f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else repr(value)
    retries = f" (retries: {result.retries})" if result.retries else ""
    return f"{result.state:<8} {shown}{retries}"


def _tail(path: str, lines: int = 40) -> str:
    try:
        with open(path) as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def main() -> None:
    try:
        sys.exit(run())
    except PgQueueError as exc:
        raise SystemExit(f"Error: {exc}") from None


if __name__ == "__main__":
    main()
