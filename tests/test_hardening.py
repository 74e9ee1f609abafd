"""Issue 13's defects 4 and 5: what a wrong argument, a malformed DSN, a statement error or a
bad row does, each against the real Postgres and, where it matters, a real worker."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import subprocess
import sys

import psycopg
import pytest

from pgqueue import PgQueue
from pgqueue.task import Signature
from tests import taskapp
from tests.conftest import ROOT, dsn_of, wait_for


def job_count(db: psycopg.Connection) -> int:
    return db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()[0]


# -- connection= that pgqueue cannot use -------------------------------------------------------


def test_async_connection_is_refused_before_anything_is_written(app, dsn, db):
    async def attempt() -> list[str]:
        errors = []
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            calls = [
                lambda: taskapp.add.apply_async((1, 2), connection=conn),
                lambda: app.send_task("tests.taskapp.add", (1, 2), connection=conn),
                lambda: app.enqueue_many([taskapp.add.s(1, 2)], connection=conn),
                lambda: taskapp.add.enqueue_many([(1, 2)], connection=conn),
                lambda: taskapp.add.s(1, 2).apply_async(connection=conn),
                lambda: app.transaction(conn).__enter__(),
            ]
            async with conn.cursor() as cur:
                calls.append(lambda: taskapp.add.apply_async((1, 2), connection=cur))
                for call in calls:
                    with pytest.raises(TypeError) as info:
                        call()
                    errors.append(str(info.value))
        return errors

    errors = asyncio.run(attempt())
    assert len(errors) == 7
    for message in errors:
        assert "async" in message
        assert "psycopg.Connection" in message
    assert job_count(db) == 0


def test_objects_that_are_not_connections_are_refused(app, db):
    for wrong in ("postgresql://localhost/x", 42, object()):
        with pytest.raises(TypeError, match=r"psycopg\.Connection or psycopg\.Cursor"):
            taskapp.add.apply_async((1, 2), connection=wrong)
        with pytest.raises(TypeError, match=r"psycopg\.Connection or psycopg\.Cursor"):
            app.enqueue_many([taskapp.add.s(1, 2)], connection=wrong)
    assert job_count(db) == 0


def test_an_unknown_async_driver_is_refused_and_writes_nothing(app, dsn, db):
    class AwaitingCursor:
        """A driver's cursor whose execute() returns an awaitable without being declared
        async, the last thing the producer can still catch."""

        def execute(self, sql, params):
            async def never_awaited() -> None:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(sql, params)

            return never_awaited()

        def fetchone(self) -> None:
            return None

    with pytest.raises(TypeError, match="returned an awaitable"):
        taskapp.add.apply_async((1, 2), connection=AwaitingCursor())
    assert job_count(db) == 0


# -- a malformed DSN ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dsn",
    [
        "host=127.0.0.1 password=Pa55word junk",
        "host=127.0.0.1 password='Pa55word",
        "postgresql://someone:Pa55word@127.0.0.1/x?junk=1",
        "postgresql://someone@127.0.0.1/x?password=Pa55word&junk=1",
    ],
)
def test_a_malformed_dsn_is_reported_without_its_password(dsn):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "pgqueue.cli", "--dsn", dsn, "status"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Pa55word" not in output
    assert "invalid DSN" in output
    assert "***" in output  # where the password was
    assert "key=value" in output and "postgresql://" in output  # how to write one
    assert "Traceback" not in output


def test_a_malformed_dsn_given_to_the_app_hides_its_password_too():
    from pgqueue.exceptions import ConfigurationError

    app = PgQueue("x", dsn="host=127.0.0.1 password=s3cr3t junk")
    with pytest.raises(ConfigurationError) as info:
        app.connection()
    assert "s3cr3t" not in str(info.value)
    assert 'missing "="' in str(info.value)


# -- where metrics listen -------------------------------------------------------------------


def _listening_on(pid: int, port: int) -> set[str]:
    """The local addresses process ``pid`` listens on at ``port``, from /proc/<pid>/net."""
    found = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            next(f)
            for line in f:
                local, _, state = line.split()[1:4]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.add(str(ipaddress.ip_address(bytes.fromhex(address)[::-1])))
    return found


def test_metrics_listen_on_loopback_unless_told_otherwise(app, worker):
    pytest.importorskip("prometheus_client")
    ports = [_free_port(), _free_port()]
    local = worker("-c", "1", "--metrics-port", str(ports[0]))
    wide = worker("-c", "1", "--metrics-port", str(ports[1]), "--metrics-host", "0.0.0.0")
    wait_for(lambda: _listening_on(local.pid, ports[0]), what="the metrics server to listen")
    wait_for(lambda: _listening_on(wide.pid, ports[1]), what="the metrics server to listen")
    assert _listening_on(local.pid, ports[0]) == {"127.0.0.1"}
    assert _listening_on(wide.pid, ports[1]) == {"0.0.0.0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- a worker's failed connect ----------------------------------------------------------------


def test_a_failed_worker_connect_closes_the_connections_it_opened(bare_postgresql):
    from pgqueue.exceptions import SchemaMissingError
    from pgqueue.worker import Worker

    bare = PgQueue("bare", dsn=dsn_of(bare_postgresql))
    bare.task(name="noop")(lambda: None)
    w = Worker(bare, name="connect-leak", pool="solo")

    def sessions() -> int:
        return bare_postgresql.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
            ("%connect-leak%",),
        ).fetchone()[0]

    bare_postgresql.autocommit = True
    # The schema check fails after all three connections are open; the exception (and
    # with it any connection the failed call's frames still hold) is kept alive meanwhile.
    with pytest.raises(SchemaMissingError) as failed:
        w._connect()
    wait_for(lambda: sessions() == 0, timeout=10, what="the worker's sessions to end")
    assert "pgqueue migrate" in str(failed.value)


# -- priorities and names the jobs table cannot take -----------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"priority": 2**40}, ValueError, ["1099511627776", "-2147483648", "2147483647"]),
        ({"priority": 2**31}, ValueError, ["2147483648", "2147483647"]),
        ({"priority": -(2**31) - 1}, ValueError, ["-2147483649", "-2147483648"]),
        ({"priority": "high"}, TypeError, ["'high'", "integer", "2147483647"]),
        ({"priority": 1.5}, TypeError, ["1.5", "integer"]),
        ({"queue": "q" * 8001}, ValueError, ["queue name", "8001 bytes", "1000"]),
        ({"queue": "é" * 600}, ValueError, ["queue name", "1200 bytes", "1000"]),
        ({"queue": 7}, TypeError, ["queue name", "string"]),
    ],
)
def test_bad_priority_or_queue_is_refused_on_every_producer_path(app, db, options, error, words):
    calls = [
        lambda: taskapp.add.apply_async((1, 2), **options),
        lambda: app.send_task("tests.taskapp.add", (1, 2), **options),
        lambda: taskapp.add.s(1, 2).set(**options).delay(),
        lambda: app.enqueue_many([taskapp.add.s(0, 0), taskapp.add.s(1, 2).set(**options)]),
        lambda: taskapp.add.enqueue_many([(1, 2)], **options),
    ]
    with psycopg.connect(db.info.dsn, autocommit=True) as conn:
        calls.append(
            lambda: app.enqueue_many([taskapp.add.s(1, 2).set(**options)], connection=conn)
        )
        for call in calls:
            with pytest.raises(error) as info:
                call()
            for word in words:
                assert word in str(info.value)
            assert "tests.taskapp.add" in str(info.value)
    assert job_count(db) == 0


def test_bad_priority_or_queue_from_a_route_is_refused(app, db):
    try:
        app.conf.task_routes = {"tests.taskapp.add": {"priority": 2**40}}
        with pytest.raises(ValueError, match="priority 1099511627776 is out of range"):
            taskapp.add.delay(1, 2)
        app.conf.task_routes = {"tests.taskapp.*": {"queue": "x" * 9000}}
        with pytest.raises(ValueError, match=r"queue name .* is 9000 bytes long"):
            app.enqueue_many([taskapp.add.s(1, 2)])
    finally:
        app.conf.task_routes = None
    assert job_count(db) == 0


def test_an_over_long_task_name_is_refused(app, db):
    with pytest.raises(ValueError, match=r"task name .* is 100000 bytes long; names may be"):
        app.send_task("t" * 100_000, (1, 2))
    with pytest.raises(ValueError, match="task name"):
        app.enqueue_many([Signature("t" * 1001, (1, 2))])
    # The limit itself is allowed.
    app.send_task("t" * 1000, (1, 2))
    assert job_count(db) == 1


# -- statement errors are not connection losses ---------------------------------------------


def test_statement_errors_surface_as_themselves_and_a_lost_connection_as_unavailable(dsn, db):
    from pgqueue.db import translate_errors
    from pgqueue.exceptions import DatabaseUnavailable

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET statement_timeout = '50ms'")
        with pytest.raises(psycopg.errors.QueryCanceled), translate_errors():
            conn.execute("SELECT pg_sleep(5)")
        conn.execute("SET statement_timeout = 0")
        conn.execute("SET lock_timeout = '50ms'")
        with db.transaction():
            db.execute("LOCK TABLE pgqueue.jobs IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(psycopg.errors.LockNotAvailable), translate_errors():
                conn.execute("SELECT count(*) FROM pgqueue.jobs")
        # The same connection goes on working after both.
        assert conn.execute("SELECT 1").fetchone() == (1,)
        pid = conn.info.backend_pid
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(DatabaseUnavailable, match="lost the connection"), translate_errors():
            conn.execute("SELECT 1")


def _worker_sessions(db: psycopg.Connection, name: str) -> list[tuple[str, int]]:
    return db.execute(
        "SELECT application_name, pid FROM pg_stat_activity WHERE application_name LIKE %s"
        " AND application_name NOT LIKE 'pgqueue listener%%' ORDER BY 1",
        (f"% {name}",),
    ).fetchall()


def _registration(db: psycopg.Connection) -> list[tuple[str, object]]:
    return db.execute("SELECT id::text, started_at FROM pgqueue.workers").fetchall()


def _failures(w) -> int:
    """Statements of the worker that the lock made fail, as its log (at DEBUG) tells."""
    return w.output().count("due to lock timeout")


def _round_trips_failed(w) -> int:
    out = w.output()
    return out.count("a round trip failed:") + out.count("a round trip failed again:")


def _held_worker_test(db, worker, name: str, table: str, enqueue_first: bool) -> None:
    """Jobs go through a worker while ``table`` is locked against its writes for a while:
    its statements fail on lock_timeout, it keeps its sessions and registration, and every
    job runs once and ends SUCCESS once the lock is gone."""
    db.execute(f"ALTER DATABASE {db.info.dbname} SET lock_timeout = '200ms'")
    tags = [f"held-{i}" for i in range(6)]
    locker = psycopg.connect(db.info.dsn)  # its transaction holds the lock
    try:
        if enqueue_first:
            results = [taskapp.record.delay(t) for t in tags]
        locker.execute(f"LOCK TABLE pgqueue.{table} IN SHARE MODE")
        w = worker("-c", "2", "-P", "threads", "-n", name)
        sessions = _worker_sessions(db, name)
        registered = _registration(db)
        assert len(sessions) == 2 and len(registered) == 1
        if not enqueue_first:
            results = [taskapp.record.delay(t) for t in tags]
        # At least three failed round trips, the first and retries after it (or, as
        # pgqueue once did, a reconnection, which the assertions below refuse).
        wait_for(
            lambda: _failures(w) >= 3 or "reconnecting" in w.output(),
            timeout=30,
            what="round trips to fail",
        )
        assert not any(r.ready() for r in results)
    finally:
        locker.rollback()
        locker.close()
    wait_for(lambda: all(r.ready() for r in results), timeout=30, what="jobs to finish")
    assert [r.state for r in results] == ["SUCCESS"] * len(results)
    runs = db.execute("SELECT tag, count(*) FROM test_runs GROUP BY tag ORDER BY tag")
    assert runs.fetchall() == [(t, 1) for t in tags]
    # Same sessions, same registration: no reconnection, no re-registration.
    assert _worker_sessions(db, name) == sessions
    assert _registration(db) == registered
    out = w.output()
    assert out.count("a round trip failed:") == 1, out
    assert "LockNotAvailable (55P03)" in out
    assert "reconnecting" not in out and "lost" not in out, out
    wait_for(lambda: "statements succeed again" in w.output(), timeout=10, what="the recovery line")


def test_a_worker_rides_out_outcome_writes_refused_by_a_lock_timeout(app, db, worker):
    _held_worker_test(db, worker, "held-results", "results", enqueue_first=False)


def test_a_worker_rides_out_claims_refused_by_a_lock_timeout(app, db, worker):
    _held_worker_test(db, worker, "held-jobs", "jobs", enqueue_first=True)


# -- broken rows of periodic_tasks ----------------------------------------------------------

BROKEN_ROWS = {
    # name: (columns, values, words the reason must hold)
    "bad-cron": ("cron", "every tuesday", ["every tuesday"]),
    "bad-zone": ("timezone", "Mars/Olympus_Mons", ["Mars/Olympus_Mons"]),
    "bad-option": ("options", '{"max_retries": "many"}', ["max_retries", "an integer", "'many'"]),
    "bad-key": ("options", '{"bogus": 1}', ["bogus"]),
}


def _periodic_table_with_broken_rows(db: psycopg.Connection) -> None:
    from pgqueue.beat import PeriodicEntry, add_entry
    from pgqueue.schedules import Schedule

    good = PeriodicEntry(
        name="good", task="tests.record", schedule=Schedule(interval=0.2), args=("beat-good",)
    )
    add_entry(db, good)
    for name, (column, value, _) in BROKEN_ROWS.items():
        interval = None if column == "cron" else 60
        db.execute(
            f"INSERT INTO pgqueue.periodic_tasks (name, task_name, interval_seconds, {column})"
            " VALUES (%s, 'tests.record', %s, %s)",
            (name, interval, value),
        )


def test_beat_list_shows_a_broken_row_as_broken_and_the_others_as_they_are(dsn, db):
    from click.testing import CliRunner

    from pgqueue.cli import main

    _periodic_table_with_broken_rows(db)
    done = CliRunner().invoke(main, ["--dsn", dsn, "beat", "list"])
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    (good,) = [line for line in lines if line.startswith("good ")]
    assert "every 0.2s" in good
    for name, (_, _, words) in BROKEN_ROWS.items():
        (listed,) = [line for line in lines if line.startswith(f"{name} ")]
        assert "BROKEN" in listed
        (reason,) = [line for line in lines if line.startswith(f"BROKEN {name}:")]
        for word in words:
            assert word in reason, reason
        assert "pgqueue beat remove" in reason


def test_beat_serves_the_good_entries_and_names_each_broken_row_once(dsn, db):
    from tests.conftest import CliProcess

    _periodic_table_with_broken_rows(db)
    beat = CliProcess(dsn, db, ["beat", "--max-interval", "0.2", "--loglevel", "DEBUG"])
    try:

        def retried_each_bad_row_twice() -> bool:
            out = beat.output()
            return all(out.count(f"'{name}'") >= 3 for name in BROKEN_ROWS)

        wait_for(retried_each_bad_row_twice, timeout=30, what="beat to retry each bad row")
        wait_for(
            lambda: db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()[0] >= 3,
            timeout=30,
            what="three ticks of the good entry",
        )
        out = beat.output()
        for name in BROKEN_ROWS:
            errors = [line for line in out.splitlines() if "ERROR" in line and f"'{name}'" in line]
            assert len(errors) == 1, out
            assert "fix its row or remove it" in errors[0]
        sent = db.execute("SELECT DISTINCT task_name, args FROM pgqueue.jobs").fetchall()
        assert sent == [("tests.record", ["beat-good"])]
    finally:
        beat.stop()
        beat.close()


# -- jobs no live worker runs -----------------------------------------------------------------


def test_status_lists_the_tasks_no_live_worker_runs_with_their_job_counts(app, dsn, db, worker):
    from click.testing import CliRunner

    from pgqueue.cli import main

    worker("-c", "1", "-P", "threads")  # consumes "default" only
    for i in range(3):
        app.send_task("tests.nobody_has_this", (i,))
    for _ in range(2):
        taskapp.send_email.delay("a@b.c")  # queue "emails": no worker consumes it
    served = taskapp.add.delay(1, 2)
    assert served.get(timeout=30) == 3
    done = CliRunner().invoke(main, ["--dsn", dsn, "status"])
    assert done.exit_code == 0, done.output
    section = done.output.split("No live worker runs these tasks", 1)[1].splitlines()[2:]
    rows = [line.split() for line in section if line.strip()]
    assert rows == [["default", "tests.nobody_has_this", "3"], ["emails", "emails.send", "2"]]


def test_a_worker_warns_once_per_task_no_live_worker_runs(app, db, worker):
    w = worker("-c", "1", "-P", "threads")

    def warned(task: str) -> int:
        return w.output().count(f"jobs of task '{task}' wait in queue 'default'")

    # Each new task is warned about by a later maintenance pass than the one before, so
    # by the third the first two were checked again and again.
    for task in ("tests.nobody_1", "tests.nobody_2", "tests.nobody_3"):
        app.send_task(task, ())
        wait_for(lambda task=task: warned(task) >= 1, timeout=30, what=f"a warning on {task}")
    for task in ("tests.nobody_1", "tests.nobody_2", "tests.nobody_3"):
        assert warned(task) == 1, w.output()
    line = next(x for x in w.output().splitlines() if "'tests.nobody_1'" in x)
    assert "WARNING" in line
    assert "-Q default" in line and "include=[...]" in line
    assert "pgqueue purge -Q default --task tests.nobody_1" in line


def test_the_cli_prints_a_refused_statement_on_one_line(dsn, db):
    from click.testing import CliRunner

    from pgqueue.cli import main

    db.execute(f"ALTER DATABASE {db.info.dbname} SET lock_timeout = '100ms'")
    with db.transaction():
        db.execute("LOCK TABLE pgqueue.jobs IN ACCESS EXCLUSIVE MODE")
        done = CliRunner().invoke(main, ["--dsn", dsn, "jobs"])
    assert done.exit_code == 1
    assert done.output.strip().splitlines() == [
        "Error: the database refused a statement: LockNotAvailable (55P03): "
        "canceling statement due to lock timeout"
    ]


def test_a_warm_shutdown_waits_for_outcomes_a_statement_error_held_back(app, db, worker):
    import signal

    db.execute(f"ALTER DATABASE {db.info.dbname} SET lock_timeout = '200ms'")
    w = worker("-c", "2", "-P", "threads", "-n", "held-stop")
    locker = psycopg.connect(db.info.dsn)
    try:
        locker.execute("LOCK TABLE pgqueue.results IN SHARE MODE")
        results = [taskapp.record.delay(f"stop-{i}") for i in range(2)]
        wait_for(lambda: _round_trips_failed(w) >= 1, timeout=30, what="a write to fail")
        w.signal(signal.SIGTERM)
        wait_for(lambda: "warm shutdown" in w.output(), timeout=10, what="the shutdown")
        seen = _round_trips_failed(w)
        wait_for(
            lambda: _round_trips_failed(w) >= seen + 2 or w.proc.poll() is not None,
            timeout=30,
            what="retries while stopping",
        )
        assert w.proc.poll() is None  # still waiting to write the outcomes
    finally:
        locker.rollback()
        locker.close()
    assert w.proc.wait(timeout=30) == 0
    assert [r.state for r in results] == ["SUCCESS", "SUCCESS"]
