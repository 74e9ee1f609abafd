"""Hostile input: each gets one clear error, nothing is half-written, the worker serves on.

Workers here run tests/hostileapp.py; the test process sends its tasks by name.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pgqueue import PgQueue, migrate, states
from pgqueue.cli import main as cli_main
from pgqueue.exceptions import (
    DatabaseUnavailable,
    EncodeError,
    SchemaMissingError,
    SchemaTooNewError,
)
from pgqueue.schedules import InvalidSchedule
from pgqueue.task import Signature
from tests import hostileapp
from tests.conftest import ROOT, CliProcess, dsn_of, wait_for

UTC = dt.timezone.utc


def sig(name: str, args: tuple[Any, ...] = (), **options: Any) -> Signature:
    return Signature(name, args, options=options)


class HostileWorker(CliProcess):
    """A real ``pgqueue worker -A tests.hostileapp:app`` process."""

    kind = "hostile-worker"

    def __init__(self, dsn: str, db: psycopg.Connection[Any], args: list[str]) -> None:
        super().__init__(
            dsn, db, ["worker", "-A", "tests.hostileapp:app", "--loglevel", "INFO", *args]
        )

    def wait_ready(self) -> HostileWorker:
        def registered() -> bool:
            query = "SELECT 1 FROM pgqueue.workers WHERE pid = %s"
            return self.db.execute(query, (self.pid,)).fetchone() is not None

        self._wait_until(registered, 30, "worker to register")
        return self

    def alive(self) -> bool:
        return self.proc.poll() is None


@pytest.fixture
def hostile_worker(dsn: str, db: psycopg.Connection[Any]) -> Iterator[Callable[..., HostileWorker]]:
    started: list[HostileWorker] = []

    def start(*args: str) -> HostileWorker:
        w = HostileWorker(dsn, db, list(args or ("-P", "threads", "-c", "2")))
        started.append(w)
        return w.wait_ready()

    yield start
    for w in started:
        w.close()


def jobs_left(db: psycopg.Connection[Any]) -> int:
    return int(db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()[0])


def result_row(db: psycopg.Connection[Any], job_id: str) -> tuple[Any, ...] | None:
    return db.execute(  # type: ignore[no-any-return]
        "SELECT state, exc_type, exc_message, result FROM pgqueue.results WHERE task_id = %s",
        (job_id,),
    ).fetchone()


def insert_by_hand(db: psycopg.Connection[Any], task: str, **columns: str) -> str:
    """A job row written with SQL, as a DBA or another program might; values are SQL
    literals (cast by the database), so the row holds exactly what the table accepts."""
    job_id = str(uuid.uuid4())
    names = ["id", "task_name", *columns]
    values = ["%s", "%s", *columns.values()]
    db.execute(
        f"INSERT INTO pgqueue.jobs ({', '.join(names)}) VALUES ({', '.join(values)})",
        (job_id, task),
    )
    return job_id


# -- rows written by hand ------------------------------------------------------------------

DEEP = "[" * 5000 + "]" * 5000  # jsonb takes it; Python's json gives up near 1,000 levels
LONG_NUMBER = "1" * 5000  # jsonb takes it; Python reads at most 4,300 digits into an int


def test_rows_the_worker_cannot_call_end_failure_and_the_worker_serves_on(app, db, hostile_worker):
    # NULL or mistyped args and kwargs never get in: the table's constraints refuse them.
    for columns in ({"args": "NULL"}, {"kwargs": "NULL"}, {"args": "'{}'"}, {"kwargs": "'[]'"}):
        with pytest.raises((psycopg.errors.NotNullViolation, psycopg.errors.CheckViolation)):
            insert_by_hand(db, "hostile.echo", **columns)
    # Claimed by the worker's claim (it starts after the rows are in): one batch holds them all.
    undecodable = {
        "long number": insert_by_hand(db, "hostile.echo", args=f"'[{LONG_NUMBER}]'"),
        "deep arrays": insert_by_hand(db, "hostile.echo", kwargs=f"'{{\"k\": {DEEP}}}'"),
        "options": insert_by_hand(db, "hostile.echo", options="'\"not an object\"'"),
        "time limit": insert_by_hand(db, "hostile.echo", time_limit="'NaN'"),
    }
    rejected_by_task = {
        "wrong types": insert_by_hand(db, "hostile.add", args="'[1, \"two\"]'"),
        "missing argument": insert_by_hand(db, "hostile.add", args="'[1]'"),
        "unknown keyword": insert_by_hand(db, "hostile.add", kwargs='\'{"1 z": 1, "x": 1}\''),
    }
    # Options the claim reads in SQL, and times Python cannot hold, must not fail the claim.
    odd_but_runnable = {
        "acks_late not a boolean": insert_by_hand(
            # first in claim order, so that the claim itself starts it
            db,
            "hostile.add",
            args="'[1, 1]'",
            options='\'{"acks_late": "maybe"}\'',
            priority="10",
        ),
        "run_at -infinity": insert_by_hand(
            db, "hostile.add", args="'[1, 2]'", run_at="'-infinity'"
        ),
        "expires_at infinity": insert_by_hand(
            db, "hostile.add", args="'[1, 3]'", expires_at="'infinity'"
        ),
    }
    never_due = insert_by_hand(db, "hostile.add", args="'[0, 0]'", run_at="'infinity'")
    unknown_task = insert_by_hand(db, "nobody.has.this.task")

    w = hostile_worker()
    for what, job_id in {**undecodable, **rejected_by_task, **odd_but_runnable}.items():
        wait_for(lambda: result_row(db, job_id), timeout=30, what=f"the {what} job to end")  # noqa: B023
    for what, job_id in undecodable.items():
        state, exc_type, message, _ = result_row(db, job_id)
        assert (state, exc_type) == (states.FAILURE, "pgqueue.exceptions.DecodeError"), what
        assert job_id in message and "hostile.echo" in message, message
    assert "4300" in result_row(db, undecodable["long number"])[2]
    assert "recursion" in result_row(db, undecodable["deep arrays"])[2]
    assert "options" in result_row(db, undecodable["options"])[2]
    assert "time_limit must be a number" in result_row(db, undecodable["time limit"])[2]
    for what, job_id in rejected_by_task.items():
        state, exc_type, message, _ = result_row(db, job_id)
        assert (state, exc_type) == (states.FAILURE, "TypeError"), (what, message)
    results = [result_row(db, job_id) for job_id in odd_but_runnable.values()]
    assert [(r[0], r[3]) for r in results] == [("SUCCESS", 2), ("SUCCESS", 3), ("SUCCESS", 4)]
    # The job not due before the end of time, and the one of a task nobody runs, wait.
    waiting = db.execute(
        "SELECT id::text FROM pgqueue.jobs WHERE worker_id IS NULL AND state = 'PENDING'"
    ).fetchall()
    assert sorted(r[0] for r in waiting) == sorted([never_due, unknown_task])

    # An idle worker is handed new jobs by the insert trigger, with the job in the
    # notification: one it cannot decode ends the same way, and the next job runs.
    wait_for(
        lambda: db.execute("SELECT count(*) FROM pgqueue.worker_slots WHERE offered").fetchone()[0],
        what="the idle worker to offer its slots",
    )
    with psycopg.connect(dsn_of(db)) as conn:  # committed at the end of the block
        handed = insert_by_hand(conn, "hostile.echo", args=f"'[{LONG_NUMBER}]'")
        state = conn.execute("SELECT state FROM pgqueue.jobs WHERE id = %s", (handed,))
        assert state.fetchone() == ("STARTED",)  # handed over by the insert itself
    wait_for(lambda: result_row(db, handed), what="the handed job to end")
    assert result_row(db, handed)[:2] == (states.FAILURE, "pgqueue.exceptions.DecodeError")
    assert app.send_task("hostile.add", (2, 2)).get(timeout=30) == 4
    # Rows the trigger cannot hand over (odd options, infinite times) go in all the same
    # while the worker offers its slots, and are claimed instead.
    wait_for(
        lambda: db.execute("SELECT count(*) FROM pgqueue.worker_slots WHERE offered").fetchone()[0],
        what="the idle worker to offer its slots again",
    )
    with psycopg.connect(dsn_of(db)) as conn:
        odd_while_idle = [
            insert_by_hand(
                conn, "hostile.add", args="'[2, 1]'", options='\'{"acks_late": "maybe"}\''
            ),
            insert_by_hand(conn, "hostile.add", args="'[2, 2]'", run_at="'-infinity'"),
            insert_by_hand(conn, "hostile.add", args="'[2, 3]'", expires_at="'infinity'"),
        ]
        states_now = conn.execute(
            "SELECT state FROM pgqueue.jobs WHERE id = ANY(%s::uuid[]) ORDER BY seq",
            (odd_while_idle,),
        ).fetchall()
        # the first handed over (its odd option ignored), the infinite times left to a claim
        assert states_now == [("STARTED",), ("PENDING",), ("PENDING",)]
    for job_id in odd_while_idle:
        wait_for(lambda: result_row(db, job_id), what="an odd row to run")  # noqa: B023
    assert [result_row(db, j)[::3] for j in odd_while_idle] == [("SUCCESS", n) for n in (3, 4, 5)]
    assert w.alive()
    assert jobs_left(db) == 2
    # the operator's commands show a time Python cannot hold as the end of time
    for command in (["jobs", "--json"], ["inspect", never_due, "--json"]):
        shown = CliRunner().invoke(cli_main, ["--dsn", dsn_of(db), *command])
        assert shown.exit_code == 0, shown.output
        assert "9999-12-31T23:59:59.999999+00:00" in shown.output


# -- payload size ----------------------------------------------------------------------------


def test_ten_megabytes_go_through_a_worker_and_back(app, db, hostile_worker):
    hostile_worker()
    payload = "é" * (5 * 1024 * 1024)  # 10 MB of UTF-8, 30 MB as escaped JSON text: under 64 MiB
    plain = "x" * (10 * 1024 * 1024)
    r = app.send_task("hostile.echo", (plain,), {"second": payload})
    assert r.get(timeout=120) == [[plain], {"second": payload}]


def test_arguments_over_the_limit_are_refused_at_enqueue_and_nothing_is_written(
    app, db, monkeypatch
):
    hundred_mb = "x" * (100 * 1024 * 1024)
    with pytest.raises(EncodeError, match=r"over task_max_payload_size \(67,108,864 bytes\)"):
        app.send_task("hostile.echo", (hundred_mb,))
    del hundred_mb
    # every enqueue path checks each job: a small limit shows it without big strings
    monkeypatch.setitem(app.conf, "task_max_payload_size", 1000)
    small, big = ("s" * 10,), ("b" * 2000,)
    with pytest.raises(EncodeError, match=r"hostile.echo: its arguments take 2,0\d\d bytes"):
        app.send_task("hostile.echo", kwargs={"k": big[0]})
    batches = {
        "copy": [sig("hostile.echo", small), sig("hostile.echo", big)],
        "timed": [
            sig("hostile.echo", small).set(countdown=5),
            sig("hostile.echo", big).set(countdown=5),
        ],
    }
    for name, batch in batches.items():
        with pytest.raises(EncodeError, match="task_max_payload_size"):
            app.enqueue_many(batch)
        with psycopg.connect(dsn_of(db), autocommit=True) as conn, pytest.raises(EncodeError):
            app.enqueue_many(batch, connection=conn)
        assert jobs_left(db) == 0, name
    # a batch over the limit as a whole, each job under it, is fine
    app.enqueue_many([sig("hostile.echo", ("y" * 600,)) for _ in range(3)])
    assert jobs_left(db) == 3


def test_a_result_over_the_limit_ends_failure_with_a_clear_error(
    app, db, hostile_worker, monkeypatch
):
    monkeypatch.setenv("HOSTILE_CONF", json.dumps({"task_max_payload_size": 1_000_000}))
    w = hostile_worker()
    r = app.send_task("hostile.big", (2_000_000,))
    with pytest.raises(EncodeError, match=r"2,000,002 bytes of JSON, over task_max_payload_size"):
        r.get(timeout=30)
    assert app.send_task("hostile.big", (10,)).get(timeout=30) == "x" * 10
    # so do new arguments for a retry
    r = app.send_task("hostile.retry_big", (2_000_000,))
    with pytest.raises(EncodeError, match=r"the retry's arguments take 2,000,00\d bytes"):
        r.get(timeout=30)
    assert w.alive()


# -- names shaped like SQL -------------------------------------------------------------------


def test_names_shaped_like_sql_round_trip_unharmed(app, db, hostile_worker):
    hostile_worker("-P", "threads", "-c", "2", "-Q", f"default,{hostileapp.SQL_QUEUE}")
    kwargs = {
        "k'); DROP TABLE pgqueue.jobs; --": "v'; DELETE FROM pgqueue.results; --",
        'quote"s': "semi;colon",
        "$1 %(x)s %s {}": "\\'\\\"",
    }
    r = app.send_task(hostileapp.SQL_TASK, kwargs=kwargs, queue=hostileapp.SQL_QUEUE)
    assert r.get(timeout=30) == kwargs
    stored = db.execute(
        "SELECT task_name, queue FROM pgqueue.results WHERE task_id = %s", (r.id,)
    ).fetchone()
    assert stored == (hostileapp.SQL_TASK, hostileapp.SQL_QUEUE)
    # and the operator's view of it
    shown = CliRunner().invoke(cli_main, ["--dsn", dsn_of(db), "inspect", r.id, "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["task_name"] == hostileapp.SQL_TASK
    tables = db.execute(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'pgqueue'"
        " AND tablename IN ('jobs', 'results')"
    ).fetchone()[0]
    assert tables == 2


# -- bad cron --------------------------------------------------------------------------------


def test_bad_cron_is_refused_naming_the_expression_and_nothing_is_written(app, db, monkeypatch):
    from pgqueue.beat import sync_schedule

    for expression in ("61 * * * *", "* * *", "'; DROP TABLE pgqueue.periodic_tasks; --"):
        result = CliRunner().invoke(
            cli_main, ["--dsn", dsn_of(db), "beat", "add", "nightly", "t", "--cron", expression]
        )
        assert result.exit_code == 1, result.output
        assert expression in result.output and "Traceback" not in result.output
    with pytest.raises(InvalidSchedule, match=r"'0 25 \* \* \*'"):
        app.add_periodic_task("0 25 * * *", sig("hostile.echo"), name="bad")
    assert "bad" not in (app.conf.beat_schedule or {})
    good = {"task": "hostile.echo", "schedule": 60.0}
    monkeypatch.setitem(
        app.conf, "beat_schedule", {"good": good, "bad": {"task": "t", "schedule": "*/0 * * * *"}}
    )
    with (
        psycopg.connect(dsn_of(db), autocommit=True) as conn,
        pytest.raises(InvalidSchedule, match=r"'\*/0 \* \* \* \*'"),
    ):
        sync_schedule(app, conn)
    assert db.execute("SELECT count(*) FROM pgqueue.periodic_tasks").fetchone()[0] == 0


# -- times -----------------------------------------------------------------------------------


def run_at(db: psycopg.Connection[Any], job_id: str) -> tuple[dt.datetime, dt.datetime | None]:
    return db.execute(  # type: ignore[no-any-return]
        "SELECT run_at, expires_at FROM pgqueue.jobs WHERE id = %s", (job_id,)
    ).fetchone()


def test_far_past_eta_runs_now_and_far_future_ones_are_stored_exactly(app, db, hostile_worker):
    past = app.send_task("hostile.add", (1, 1), eta=dt.datetime(1, 1, 2, tzinfo=UTC))
    year_9999 = app.send_task("hostile.add", (1, 2), eta=dt.datetime(9999, 6, 1, tzinfo=UTC))
    last = app.send_task("hostile.add", (1, 3), eta=dt.datetime.max.replace(tzinfo=UTC))
    assert run_at(db, year_9999.id)[0] == dt.datetime(9999, 6, 1, tzinfo=UTC)
    assert run_at(db, last.id)[0] == dt.datetime.max.replace(tzinfo=UTC)
    hostile_worker()
    assert past.get(timeout=30) == 2
    assert year_9999.state == last.state == states.PENDING
    # a time Python cannot hold in UTC, or seconds no date can take: refused, nothing written
    east = dt.timezone(dt.timedelta(hours=5))
    west = dt.timezone(dt.timedelta(hours=-5))
    refused: list[dict[str, Any]] = [
        {"eta": dt.datetime.min.replace(tzinfo=east)},
        {"eta": dt.datetime.max.replace(tzinfo=west)},
        {"expires": dt.datetime.max.replace(tzinfo=west)},
        {"countdown": 1e20},
        {"countdown": float("nan")},
        {"expires": dt.timedelta(days=10**9 - 1)},
    ]
    for options in refused:
        with pytest.raises(ValueError, match=r"hostile.add: (eta|expires|countdown)=.*9999"):
            app.send_task("hostile.add", (0, 0), **options)
    assert jobs_left(db) == 2


def test_naive_datetimes_are_read_in_the_apps_timezone(app, db, monkeypatch):
    naive = dt.datetime(2030, 1, 1, 12, 0)
    r = app.send_task("hostile.add", (1, 1), eta=naive, expires=naive + dt.timedelta(hours=1))
    assert run_at(db, r.id) == (
        dt.datetime(2030, 1, 1, 12, 0, tzinfo=UTC),
        dt.datetime(2030, 1, 1, 13, 0, tzinfo=UTC),
    )
    monkeypatch.setitem(app.conf, "timezone", "America/New_York")
    r = app.send_task("hostile.add", (1, 1), eta=naive, expires=naive + dt.timedelta(hours=1))
    assert run_at(db, r.id) == (
        dt.datetime(2030, 1, 1, 17, 0, tzinfo=UTC),
        dt.datetime(2030, 1, 1, 18, 0, tzinfo=UTC),
    )
    aware = dt.datetime(2030, 1, 1, 12, 0, tzinfo=UTC)  # an aware time is taken as it is
    r = app.send_task("hostile.add", (1, 1), eta=aware)
    assert run_at(db, r.id)[0] == aware
    monkeypatch.setitem(app.conf, "timezone", "Mars/Olympus_Mons")
    with pytest.raises(Exception, match="'Mars/Olympus_Mons' is not a time zone name"):
        app.send_task("hostile.add", (1, 1), eta=naive)
    assert jobs_left(db) == 3


def test_expires_before_eta_is_kept_and_the_job_ends_revoked_without_running(
    app, db, hostile_worker
):
    # As in Celery: not refused; the job expires while it waits, and never runs.
    r = app.send_task("hostile.add", (1, 1), countdown=3600, expires=0.5)
    s = app.send_task(
        "hostile.add",
        (1, 1),
        eta=dt.datetime(9999, 1, 1, tzinfo=UTC),
        expires=dt.datetime.now(UTC) + dt.timedelta(seconds=0.5),
    )
    hostile_worker()
    for result in (r, s):
        with pytest.raises(Exception, match="expired"):
            result.get(timeout=30)
        assert result.state == states.REVOKED
    assert jobs_left(db) == 0


# -- credentials and schema ------------------------------------------------------------------


def test_failed_login_is_one_clear_error_without_the_password(db):
    # The shared server trusts 127.0.0.1 (pg_hba.conf), so a wrong password would still
    # connect: the login fails here for a role that does not exist, a password given.
    secret = "hunter2-" + uuid.uuid4().hex
    info = db.info
    bad = f"postgresql://no_such_role_{os.getpid()}:{secret}@{info.host}:{info.port}/{info.dbname}"
    producer = PgQueue("nobody", dsn=bad)
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            producer.send_task("hostile.add", (1, 1))
    finally:
        producer.close()
    assert "does not exist" in str(caught.value) and secret not in str(caught.value)
    cli = CliRunner().invoke(cli_main, ["--dsn", bad, "status"])
    assert cli.exit_code == 1 and "does not exist" in cli.output
    assert secret not in cli.output and "Traceback" not in cli.output
    worker = subprocess.run(
        [sys.executable, "-m", "pgqueue.cli", "--dsn", bad, "worker", "-A", "tests.hostileapp:app"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 1
    assert "does not exist" in worker.stderr and secret not in worker.stderr + worker.stdout
    assert "Traceback" not in worker.stderr


def test_a_database_without_the_schema_says_to_run_pgqueue_migrate(bare_postgresql):
    producer = PgQueue("bare", dsn=dsn_of(bare_postgresql))
    try:
        with pytest.raises(SchemaMissingError, match="pgqueue migrate"):
            producer.send_task("hostile.add", (1, 1))
        with pytest.raises(SchemaMissingError, match="pgqueue migrate"):
            producer.AsyncResult(str(uuid.uuid4())).state  # noqa: B018
    finally:
        producer.close()


@pytest.fixture
def newer_schema(db: psycopg.Connection[Any]) -> int:
    """The test database as a newer pgqueue would leave it: one more migration recorded."""
    newer = migrate.latest_version() + 1
    db.execute(
        "INSERT INTO pgqueue.schema_migrations (version, name) VALUES (%s, 'from_the_future')",
        (newer,),
    )
    return newer


def test_a_schema_from_a_newer_pgqueue_is_refused_by_producer_worker_and_cli(app, db, newer_schema):
    message = rf"newer than this pgqueue: it has migration {newer_schema:04d}.*Upgrade pgqueue"
    with pytest.raises(SchemaTooNewError, match=message):
        app.send_task("hostile.add", (1, 1))
    assert jobs_left(db) == 0
    for command in (["status"], ["jobs"], ["migrate"]):
        result = CliRunner().invoke(cli_main, ["--dsn", dsn_of(db), *command])
        assert result.exit_code == 1, (command, result.output)
        assert "Upgrade pgqueue" in result.output and "Traceback" not in result.output
    for process in ("worker", "beat"):
        run = subprocess.run(
            [sys.executable, "-m", "pgqueue.cli", process, "-A", "tests.hostileapp:app"],
            cwd=ROOT,
            env={**os.environ, "PGQUEUE_DSN": dsn_of(db), "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 1 and "Upgrade pgqueue" in run.stderr, (process, run.stderr)
        assert "Traceback" not in run.stderr
    # migrate neither downgrades nor touches anything
    with psycopg.connect(dsn_of(db), autocommit=True) as conn, pytest.raises(SchemaTooNewError):
        migrate.migrate(conn)
    versions = [r[0] for r in db.execute("SELECT version FROM pgqueue.schema_migrations")]
    assert versions == [m.version for m in migrate.available()] + [newer_schema]


# -- NUL and other characters Postgres cannot store ------------------------------------------


def test_nul_in_arguments_names_or_options_is_refused_at_enqueue(app, db):
    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: app.send_task("hostile.echo", ("a\x00b",)), "positional argument 0"),
        (lambda: app.send_task("hostile.echo", kwargs={"k\u0000": 1}), "keyword argument"),
        (lambda: app.send_task("hostile.echo", kwargs={"k": {"a\x00": [1]}}), "keyword argument"),
        (lambda: app.send_task("hostile\x00echo"), "task_name"),
        (lambda: app.send_task("hostile.echo", queue="q\x00"), "queue"),
        (lambda: app.enqueue_many([sig("hostile.echo", queue="q\x00")]), "queue"),
        (lambda: app.enqueue_many([sig("e\x00")]), "task_name"),
    ]
    for call, culprit in cases:
        with pytest.raises(EncodeError, match=rf"{culprit}.*NUL character") as caught:
            call()
        assert "\x00" not in str(caught.value)  # the message shows it escaped
    # a lone surrogate (bytes decoded with surrogateescape) is refused the same way
    cafe = b"caf\xe9".decode("utf-8", "surrogateescape")
    with pytest.raises(EncodeError, match=r"positional argument 0.*lone surrogate"):
        app.send_task("hostile.echo", (cafe,))
    with pytest.raises(EncodeError, match=r"keyword argument name.*lone surrogate"):
        app.send_task("hostile.echo", kwargs={cafe: 1})
    for name, queue in ((cafe, "default"), ("hostile.echo", cafe)):
        with pytest.raises(EncodeError, match="lone surrogate"):
            app.send_task(name, queue=queue)
        with pytest.raises(EncodeError, match="lone surrogate"):
            app.enqueue_many([sig(name, queue=queue)])
    assert jobs_left(db) == 0


def test_nul_in_results_exceptions_and_logs_never_loses_an_outcome(app, db, hostile_worker):
    w = hostile_worker()
    # the six characters \u0000 are no NUL: stored and returned as they are
    text = "\\u0000 and \\\\u0000 and \\x00"
    assert app.send_task("hostile.echo", (text,), {text: text}).get(timeout=30) == [
        [text],
        {text: text},
    ]
    r = app.send_task("hostile.returns_nul")
    with pytest.raises(EncodeError, match="NUL character"):
        r.get(timeout=30)
    with pytest.raises(ValueError, match="broken\ufffdglass"):
        app.send_task("hostile.fail_nul").get(timeout=30)
    # a retry's error is written to the job row (retry_jobs), not to results
    assert app.send_task("hostile.retry_nul").get(timeout=30) == "second attempt"
    assert app.send_task("hostile.log_nul").get(timeout=30) == 1
    with pytest.raises(EncodeError, match="lone surrogate"):
        app.send_task("hostile.returns_surrogate").get(timeout=30)
    with pytest.raises(FileNotFoundError, match=r"no such file: caf\?"):
        app.send_task("hostile.fail_surrogate").get(timeout=30)
    assert app.send_task("hostile.add", (2, 3)).get(timeout=30) == 5
    assert w.alive()
    log = w.output()
    assert "a log line with a NUL" in log
    # the worker's own lines show the error as stored
    assert "broken\ufffdglass" in log and "broken\x00glass" not in log
