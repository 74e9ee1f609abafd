"""Behind PgBouncer (issue 19): a real PgBouncer in transaction mode in front of each test's
database, started by a fixture and stopped after. Producers (blocking and asyncio) go
through it; workers send their claims' and liveness lock's, LISTEN's and housekeeping's
sessions to a direct ``--listen-dsn`` and the rest (outcomes, heartbeat) through it.

PgBouncer is Debian's (1.18 in CI: no prepared-statement support), installed by .ci/run.
Outside CI, the tests skip when ``pgbouncer`` is not on the PATH."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgqueue import pooler
from pgqueue.exceptions import ConfigurationError
from tests import taskapp
from tests.conftest import CliProcess, WorkerProcess, wait_for

# .ci/run sets this: there, a missing pgbouncer is a failure, not a skip.
REQUIRED_ENV = "PGQUEUE_TEST_PGBOUNCER"


@dataclass
class Bouncer:
    """A running PgBouncer: ``dsn`` reaches the test database through it, ``admin`` is its
    console (SHOW, RECONNECT)."""

    dsn: str
    admin_dsn: str
    log_path: Path

    def admin(self, command: str) -> list[tuple[Any, ...]]:
        # The console speaks only the simple query protocol: ClientCursor uses it.
        with psycopg.connect(
            self.admin_dsn, autocommit=True, cursor_factory=psycopg.ClientCursor
        ) as conn:
            cur = conn.execute(command)
            return cur.fetchall() if cur.description else []

    def server_pids(self) -> set[int]:
        """The Postgres processes PgBouncer holds for the test database."""
        dbname = conninfo_to_dict(self.dsn)["dbname"]
        with psycopg.connect(
            self.admin_dsn, autocommit=True, cursor_factory=psycopg.ClientCursor
        ) as conn:
            cur = conn.execute("SHOW SERVERS")
            assert cur.description is not None
            names = [c.name for c in cur.description]
            rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        return {int(r["remote_pid"]) for r in rows if r["database"] == dbname}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


@pytest.fixture
def bouncer(dsn: str) -> Iterator[Bouncer]:
    """PgBouncer in transaction mode in front of this test's database, as the postgres OS
    user when the tests run as root (PgBouncer refuses to run as root)."""
    binary = shutil.which("pgbouncer")
    if binary is None:
        if os.environ.get(REQUIRED_ENV):
            pytest.fail(f"{REQUIRED_ENV} is set but pgbouncer is not installed")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer; .ci/run does)")
    server = conninfo_to_dict(dsn)
    user = str(server.get("user", "postgres"))
    password = str(server.get("password", ""))
    workdir = Path(tempfile.mkdtemp(prefix="pgqueue-pgbouncer-"))
    workdir.chmod(0o777)  # PgBouncer, running as postgres, writes its log and pid file here
    port = _free_port()
    target = f"host={server.get('host', '127.0.0.1')} port={server.get('port', 5432)}"
    if password:
        target += f" password={password}"
    (workdir / "userlist.txt").write_text(f"{_quote(user)} {_quote(password)}\n")
    (workdir / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = {target}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        f"unix_socket_dir = {workdir}\n"
        "auth_type = trust\n"
        f"auth_file = {workdir / 'userlist.txt'}\n"
        "pool_mode = transaction\n"
        "default_pool_size = 10\n"
        # Several servers, used in turn: a client's next transaction lands on another one,
        # as it would on a busy pooler (by default an idle client keeps getting the same).
        "min_pool_size = 3\n"
        "server_round_robin = 1\n"
        "max_client_conn = 200\n"
        f"admin_users = {user}\n"
        f"logfile = {workdir / 'pgbouncer.log'}\n"
        f"pidfile = {workdir / 'pgbouncer.pid'}\n"
    )
    for path in workdir.iterdir():
        path.chmod(0o644)
    command = [binary, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "postgres"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    params = {"host": "127.0.0.1", "port": str(port), "user": user}
    if password:
        params["password"] = password
    found = Bouncer(
        dsn=make_conninfo(**params, dbname=str(server["dbname"])),
        admin_dsn=make_conninfo(**params, dbname="pgbouncer"),
        log_path=workdir / "pgbouncer.log",
    )

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"pgbouncer exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            found.admin("SHOW VERSION")
        except psycopg.OperationalError:
            return False
        return True

    try:
        wait_for(answers, 30, "pgbouncer to accept connections")
        yield found
    finally:
        # SIGINT: PgBouncer's safe shutdown would wait for its clients; SIGTERM does not.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def pooled_app(app: Any, bouncer: Bouncer) -> Iterator[Any]:
    """tests.taskapp's app with its DSN on PgBouncer, and no listen_dsn; the pool has its
    three servers (min_pool_size) before the test starts."""
    previous = app._dsn
    app.use_dsn(bouncer.dsn)
    app.conf.listen_dsn = None
    try:
        app.connection()
        wait_for(lambda: len(bouncer.server_pids()) >= 3, 30, "PgBouncer to fill its pool")
        yield app
    finally:
        # tests.taskapp's app is shared: the next test's app reads its own PGQUEUE_DSN
        app.use_dsn(previous)
        app.conf.listen_dsn = None


def _jobs(db: psycopg.Connection[Any]) -> set[str]:
    return {r[0] for r in db.execute("SELECT id::text FROM pgqueue.jobs")}


# -- detection ---------------------------------------------------------------------------


def test_connections_through_pgbouncer_are_detected_and_prepare_nothing(pooled_app, dsn):
    conn = pooled_app.connection()
    assert pooler.through_pooler(conn)
    assert conn.prepare_threshold is None
    with pooled_app.connect() as other:
        assert pooler.through_pooler(other) and other.prepare_threshold is None
    direct = pooled_app.__class__("direct", dsn=dsn, set_as_current=False)
    try:
        assert not pooler.through_pooler(direct.connection())
    finally:
        direct.close()


# -- producers ---------------------------------------------------------------------------


def test_producers_write_jobs_through_pgbouncer_in_transaction_mode(pooled_app, db):
    # Twenty of each: psycopg would prepare a statement from its fifth run, which PgBouncer
    # 1.18 cannot carry from one transaction to the next.
    sent = [taskapp.add.delay(i, i).id for i in range(20)]
    sent += [taskapp.add.apply_async((i, 1), countdown=60, priority=3).id for i in range(20)]
    # enqueue_many on pgqueue's own connection: COPY, then the jobs with a countdown as
    # pipelined statements, in one transaction.
    batch = pooled_app.enqueue_many(
        [taskapp.add.s(i, 2) for i in range(500)]
        + [taskapp.add.s(i, 3).set(countdown=30) for i in range(1500)]
    )
    sent += [r.id for r in batch]
    assert len(sent) == 2040
    assert _jobs(db) == set(sent)
    delayed = db.execute(
        "SELECT count(*) FROM pgqueue.jobs WHERE run_at > now() + interval '20 seconds'"
    ).fetchone()
    assert delayed == (1520,)


def test_enqueue_many_through_pgbouncer_is_all_or_nothing(pooled_app, db):
    # The second copy of an id fails the COPY: the rows before it were sent already, and
    # none of them may stay.
    duplicate = "7b0f6c1e-4c2a-4f77-9c1c-2f5f6a0f3c11"
    sigs = [taskapp.add.s(i, 0) for i in range(300)]
    sigs[100] = sigs[100].set(task_id=duplicate)
    sigs[200] = sigs[200].set(task_id=duplicate)
    with pytest.raises(psycopg.errors.UniqueViolation):
        pooled_app.enqueue_many(sigs)
    assert _jobs(db) == set()
    # The connection goes on working.
    assert len(pooled_app.enqueue_many([taskapp.add.s(1, 1)] * 3)) == 3
    assert len(_jobs(db)) == 3


def test_enqueue_on_a_callers_connection_through_pgbouncer_commits_or_rolls_back_with_it(
    pooled_app, bouncer, db
):
    db.execute("CREATE TABLE orders (id int)")
    # The caller's own connection through a transaction pooler must prepare nothing either
    # (psycopg's prepare_threshold=None), as psycopg's documentation says for PgBouncer.
    with psycopg.connect(bouncer.dsn, prepare_threshold=None) as conn:
        conn.execute("INSERT INTO orders VALUES (1)")
        gone = [taskapp.add.apply_async((i, 0), connection=conn).id for i in range(10)]
        gone += [r.id for r in pooled_app.enqueue_many([taskapp.add.s(1, 2)], connection=conn)]
        conn.rollback()
        assert _jobs(db) == set()

        with pooled_app.transaction(conn):
            conn.execute("INSERT INTO orders VALUES (2)")
            kept = [taskapp.add.delay(i, 0).id for i in range(10)]
        with contextlib.suppress(RuntimeError), pooled_app.transaction(conn):
            taskapp.add.delay(99, 0)
            raise RuntimeError("the block fails: its job goes with it")
    assert _jobs(db) == set(kept)
    assert not set(gone) & set(kept)
    assert db.execute("SELECT id FROM orders").fetchall() == [(2,)]


def test_async_producers_work_through_pgbouncer_and_roll_back_with_the_caller(
    pooled_app, bouncer, db
):
    async def scenario() -> tuple[list[str], list[str]]:
        sent = [(await taskapp.add.adelay(i, i)).id for i in range(20)]
        sent += [r.id for r in await pooled_app.aenqueue_many([taskapp.add.s(1, 1)] * 50)]
        async with await psycopg.AsyncConnection.connect(
            bouncer.dsn, prepare_threshold=None
        ) as conn:
            with contextlib.suppress(RuntimeError):
                async with pooled_app.atransaction(conn):
                    await taskapp.add.adelay(0, 0)
                    raise RuntimeError("rolled back")
            gone = (await taskapp.add.aapply_async((2, 2), connection=conn)).id
            await conn.rollback()
        assert pooler.through_pooler(await pooled_app._aconnections.get())
        await pooled_app.aclose()
        return sent, [gone]

    sent, gone = asyncio.run(scenario())
    assert _jobs(db) == set(sent)
    assert len(sent) == 70 and not set(gone) & set(sent)


# -- results -----------------------------------------------------------------------------


class PooledWorker(WorkerProcess):
    log = ""  # its output, once stopped


@contextlib.contextmanager
def _worker(bouncer: Bouncer, dsn: str, db: Any, *args: str) -> Iterator[PooledWorker]:
    """A worker on PgBouncer (--dsn) with a direct --listen-dsn; stopped warm at the end,
    its log kept in ``w.log``."""
    w = PooledWorker(bouncer.dsn, ["--listen-dsn", dsn, "-c", "2", *args], db)
    try:
        w.wait_ready()
        yield w
        code = w.stop()
        w.log = w.output()
        assert code == 0, w.log
    finally:
        w.close()


def test_get_through_pgbouncer_polls_and_with_a_listen_dsn_wakes_on_notify(
    pooled_app, bouncer, dsn, db, monkeypatch
):
    monkeypatch.setenv("PGQUEUE_TEST_CONF", json.dumps({"worker_poll_interval": 60}))
    with _worker(bouncer, dsn, db, "-P", "threads"):
        # No listen_dsn: get() cannot LISTEN through the pooler, and re-reads the row.
        with pooled_app.connect(session=True) as conn:
            assert pooler.through_pooler(conn)
        assert taskapp.add.delay(2, 3).get(timeout=30, interval=0.1) == 5

        async def aget() -> Any:
            try:
                return await taskapp.add.delay(4, 4).aget(timeout=30, interval=0.1)
            finally:
                await pooled_app.aclose()

        assert asyncio.run(aget()) == 8

        # A direct listen_dsn: get() LISTENs there. With a re-read interval far beyond the
        # timeout, only the notification can end the wait in time.
        pooled_app.conf.listen_dsn = dsn
        with pooled_app.connect(session=True) as conn:
            assert not pooler.through_pooler(conn)
        result = taskapp.sleep.delay(0.5)
        assert result.get(timeout=30, interval=120) == 0.5

        async def aget_notified() -> Any:
            return await taskapp.sleep.delay(0.5).aget(timeout=30, interval=120)

        assert asyncio.run(aget_notified()) == 0.5


# -- workers -----------------------------------------------------------------------------


def test_worker_with_a_pooled_dsn_and_a_direct_listen_dsn_runs_jobs_and_wakes_on_notify(
    pooled_app, bouncer, dsn, db, monkeypatch
):
    conf = {
        "worker_poll_interval": 60,
        "worker_heartbeat_interval": 0.2,
        "worker_synchronous_commit": "off",
    }
    monkeypatch.setenv("PGQUEUE_TEST_CONF", json.dumps(conf))
    with _worker(bouncer, dsn, db) as w:
        # Outcomes and heartbeats go through PgBouncer, many times over (psycopg would
        # prepare them from the fifth).
        results = [taskapp.add.delay(i, 1) for i in range(40)]
        assert [r.get(timeout=60, interval=0.1) for r in results] == [i + 1 for i in range(40)]
        (beat_before,) = db.execute("SELECT heartbeat_at FROM pgqueue.workers").fetchone()
        wait_for(
            lambda: db.execute(
                "SELECT heartbeat_at > %s FROM pgqueue.workers", (beat_before,)
            ).fetchone()[0],
            30,
            "a heartbeat through PgBouncer",
        )
        # Idle now, with a fallback poll a minute away: a job starting within seconds was
        # woken by NOTIFY on the direct listener (a hand-off or pgqueue_jobs).
        started = time.monotonic()
        assert taskapp.add.delay(20, 22).get(timeout=30, interval=0.1) == 42
        assert time.monotonic() - started < 20

        # The hand-off slots name the listener's own server process, which is direct.
        (listener_pid,) = db.execute("SELECT listener_pid FROM pgqueue.worker_channels").fetchone()
        (app_name,) = db.execute(
            "SELECT application_name FROM pg_stat_activity WHERE pid = %s", (listener_pid,)
        ).fetchone()
        assert app_name.startswith("pgqueue listener")
        # The liveness lock is held by a direct session, not left on a pooled server.
        held_by = db.execute(
            "SELECT a.application_name FROM pg_locks AS l JOIN pg_stat_activity AS a"
            " ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.objsubid = 2"
            " AND a.datname = current_database()"
        ).fetchall()
        assert [r[0][: len("pgqueue worker")] for r in held_by] == ["pgqueue worker"]
    assert "heartbeat failed" not in w.log and "prepared statement" not in w.log, w.log
    # The writer set synchronous_commit for its own transactions only: no server of the
    # pool, shared with other clients, was left with the worker's setting.
    with psycopg.connect(bouncer.dsn, autocommit=True, prepare_threshold=None) as conn:
        seen = {conn.execute("SHOW synchronous_commit").fetchone()[0] for _ in range(12)}
    assert seen == {"on"}


def test_worker_survives_pgbouncer_recycling_its_server_connections(
    pooled_app, bouncer, dsn, db, monkeypatch
):
    monkeypatch.setenv(
        "PGQUEUE_TEST_CONF",
        json.dumps({"worker_poll_interval": 60, "worker_heartbeat_interval": 0.2}),
    )
    with _worker(bouncer, dsn, db) as w:
        first = [taskapp.add.delay(i, 0) for i in range(20)]
        assert [r.get(timeout=60, interval=0.1) for r in first] == list(range(20))
        before = bouncer.server_pids()
        assert before
        # Every server connection is closed once released, and replaced by a new one.
        bouncer.admin("RECONNECT")
        wait_for(lambda: not bouncer.server_pids() & before, 30, "the old servers to go")
        second = [taskapp.add.delay(i, 100) for i in range(20)]
        assert [r.get(timeout=60, interval=0.1) for r in second] == [i + 100 for i in range(20)]
        assert not bouncer.server_pids() & before
        (workers,) = db.execute("SELECT count(*) FROM pgqueue.workers").fetchone()
        assert workers == 1
    assert "database connection lost" not in w.log, w.log


@pytest.mark.parametrize("listen", [None, "pooled"])
def test_a_worker_refuses_to_listen_or_lock_through_pgbouncer(pooled_app, bouncer, db, listen):
    args = ["--listen-dsn", bouncer.dsn] if listen == "pooled" else []
    w = WorkerProcess(bouncer.dsn, [*args, "-c", "1"], db)
    try:
        assert w.proc.wait(60) == 1
        output = w.output()
        assert "connection pooler such as PgBouncer" in output, output
        assert "--listen-dsn" in output and "Traceback" not in output, output
    finally:
        w.close()
    # Refused before registering: no row, and no session lock left on a pooled server.
    assert db.execute("SELECT count(*) FROM pgqueue.workers").fetchone() == (0,)
    locks = db.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchone()
    assert locks == (0,)


def test_require_direct_names_the_fix(pooled_app):
    with pooled_app.connect() as conn, pytest.raises(ConfigurationError, match="--listen-dsn"):
        pooler.require_direct(conn, "this test")


def test_beat_refuses_to_listen_through_pgbouncer_and_connects_to_listen_dsn(
    pooled_app, bouncer, dsn, db, monkeypatch
):
    refused = CliProcess(bouncer.dsn, db, ["beat", "-A", "tests.taskapp:app"])
    try:
        assert refused.proc.wait(60) == 1
        output = refused.output()
        assert "beat" in output and "--listen-dsn" in output, output
        assert "Traceback" not in output, output
    finally:
        refused.close()
    # With PGQUEUE_LISTEN_DSN direct, beat runs, on a session of its own (PgBouncer passes
    # application_name on, so its servers may carry the refused beat's name: not counted).
    monkeypatch.setenv(pooler.LISTEN_DSN_ENV, dsn)
    beat = CliProcess(bouncer.dsn, db, ["beat", "-A", "tests.taskapp:app"])

    def direct_beat_sessions() -> set[int]:
        rows = db.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'pgqueue beat%%'"
            " AND datname = current_database()"
        ).fetchall()
        return {r[0] for r in rows} - bouncer.server_pids()

    try:
        wait_for(lambda: " ready" in beat.output(), 30, "beat to be ready")
        assert direct_beat_sessions()
        assert beat.stop() == 0, beat.output()
    finally:
        beat.close()
