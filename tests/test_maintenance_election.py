"""The election of maintenance passes through pgqueue.maintenance (migration 0011): no role
but pgqueue's worker role can hold maintenance up, however many runners run one pass per
interval, and the table shows operators when each service last ran and who ran it."""

from __future__ import annotations

import itertools
import json
import signal
from typing import Any

import psycopg
import psycopg.errors
import pytest

from pgqueue.maintenance import MaintenanceRunner, Service
from pgqueue.maintenance.service import Connection
from tests import taskapp
from tests.conftest import wait_for
from tests.test_roles import as_user
from tests.test_roles import logins as logins  # the fixture
from tests.test_roles import with_outsider as with_outsider  # the fixture

SERVICES = {"rescue", "expire", "results", "vacuum", "unserved"}

# The advisory keys that elected the services before 0011 (0x70677175_0002 before they ran
# apart, then 0x70677175_0010 + offset): what anyone could hold to stop maintenance.
OLD_KEYS = [0x70677175_0002, *range(0x70677175_0010, 0x70677175_0015)]


def name_of(db: psycopg.Connection[Any], pid: int) -> str:
    return str(db.execute("SELECT name FROM pgqueue.workers WHERE pid = %s", (pid,)).fetchone()[0])


def runs_of(db: psycopg.Connection[Any], tag: str) -> int:
    return int(db.execute("SELECT count(*) FROM test_runs WHERE tag = %s", (tag,)).fetchone()[0])


def _cannot_take_a_pass(conn: psycopg.Connection[Any]) -> None:
    """Every way to hold a row of pgqueue.maintenance, or push its next pass away, is
    refused to ``conn``'s role."""
    for statement in (
        "SELECT 1 FROM pgqueue.maintenance FOR UPDATE",
        "SELECT 1 FROM pgqueue.maintenance FOR KEY SHARE",
        "UPDATE pgqueue.maintenance SET next_run_at = 'infinity'",
        "DELETE FROM pgqueue.maintenance",
        "INSERT INTO pgqueue.maintenance (service) VALUES ('x')",
        "LOCK TABLE pgqueue.maintenance IN EXCLUSIVE MODE",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute(statement)


def test_no_role_but_the_workers_can_hold_up_rescue(with_outsider, db, dsn, monkeypatch):
    monkeypatch.setenv(
        "PGQUEUE_TEST_CONF",
        json.dumps({"worker_rescue_interval": 0.2, "worker_reconnect_grace": 1.0}),
    )
    logins = with_outsider
    holders = []
    try:
        # The producer holds every old election key; it, and a role with no grant at all,
        # try to lock or push away the rows that elect now, and keep a transaction open.
        for kind in ("producer", "outsider"):
            conn = psycopg.connect(as_user(dsn, logins.names[kind]))
            holders.append(conn)
            if kind == "producer":
                for key in OLD_KEYS:
                    conn.execute("SELECT pg_advisory_lock(%s)", (key,))
                conn.commit()
                with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                    conn.execute("SELECT * FROM pgqueue.maintenance")
            _cannot_take_a_pass(conn)
            conn.execute("SELECT 1")  # a transaction left open, as a stuck client would
        # The operator reads the table, and can take no pass either.
        with logins.connect("operator") as operator:
            rows = operator.execute("SELECT service FROM pgqueue.maintenance").fetchall()
            assert {r[0] for r in rows} == SERVICES
            _cannot_take_a_pass(operator)

        first = logins.worker(db, "-c", "1", "-P", "threads")
        job = taskapp.slow_record.delay("held-up", 4)
        wait_for(lambda: runs_of(db, "held-up") == 1, what="the slow job to start")
        first.signal(signal.SIGKILL)
        first.proc.wait(30)
        second = logins.worker(db, "-c", "1", "-P", "threads")
        wait_for(lambda: runs_of(db, "held-up") == 2, what="the job rescued and run again")
        assert job.get(timeout=60)["pid"] == second.pid
        assert job.retries == 1
        # the keys are still held: the rescue did not need them
        held = db.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND pid = ANY(%s)",
            ([c.info.backend_pid for c in holders],),
        ).fetchone()[0]
        assert held == len(OLD_KEYS)
        name = name_of(db, second.pid)
        assert db.execute(
            "SELECT last_worker FROM pgqueue.maintenance WHERE service = 'rescue'"
        ).fetchone() == (name,)
        assert second.stop() == 0
        assert "permission denied" not in second.output()
    finally:
        for conn in holders:
            conn.close()


class Counted(Service):
    """A service whose every pass is a row of test_runs, stamped with the database's clock
    at the start and the end of the pass."""

    def __init__(
        self, name: str, interval: float, *, transactional: bool = True, duration: float = 0.0
    ) -> None:
        super().__init__(interval)
        self.name = name
        self.transactional = transactional
        self.duration = duration

    def work(self, conn: Connection) -> bool:
        conn.execute(
            "INSERT INTO test_runs (tag, pid, at) VALUES (%s, pg_backend_pid(), now())",
            (self.name,),
        )
        if self.duration:
            conn.execute("SELECT pg_sleep(%s)", (self.duration,))  # the pass's own work
        conn.execute(
            "INSERT INTO test_runs (tag, pid) VALUES (%s, pg_backend_pid())",
            (self.name + ":end",),
        )
        return False


def _run_together(runners: list[MaintenanceRunner], until: Any) -> None:
    """Start every runner (a thread and a connection each); stop them all when ``until()``
    holds."""
    try:
        for r in runners:
            r.start()
        wait_for(until, timeout=60, what="the passes")
    finally:
        for r in runners:
            r.stop()


def _starts(db: psycopg.Connection[Any], tag: str) -> list[Any]:
    return [r[0] for r in db.execute("SELECT at FROM test_runs WHERE tag = %s ORDER BY at", (tag,))]


def test_many_runners_run_each_pass_once_per_interval(app, db, dsn):
    interval = 0.5
    runners = [
        MaintenanceRunner(dsn, [Counted("counted", interval)], worker_name=f"runner-{i}")
        for i in range(8)
    ]
    _run_together(runners, lambda: runs_of(db, "counted:end") >= 8)
    starts = _starts(db, "counted")
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    # by the database's clock: never two passes within one interval, and eight runners
    # looking make no more passes than one would
    assert min(gaps) >= interval, gaps
    span = (starts[-1] - starts[0]).total_seconds()
    assert len(starts) <= span / interval + 1, (len(starts), span)
    # and the runners that lose learn when the next pass is due: no interval is skipped
    assert max(gaps) < 2 * interval, gaps
    last = db.execute(
        "SELECT last_worker, last_started_at FROM pgqueue.maintenance WHERE service = 'counted'"
    ).fetchone()
    assert last[0] in {r.worker_name for r in runners}
    assert last[1] == starts[-1]


def test_a_pass_outside_a_transaction_never_overlaps_another(app, db, dsn):
    # each pass lasts longer than the interval: with no election, they would overlap
    runners = [
        MaintenanceRunner(
            dsn, [Counted("apart", 0.1, transactional=False, duration=0.3)], worker_name=f"r{i}"
        )
        for i in range(6)
    ]
    _run_together(runners, lambda: runs_of(db, "apart:end") >= 5)
    rows = db.execute(
        "SELECT tag, at FROM test_runs WHERE tag IN ('apart', 'apart:end') ORDER BY at"
    ).fetchall()
    # a pass ends before the next starts: start, end, start, end...
    tags = [tag for tag, _ in rows]
    assert tags[: 2 * (len(tags) // 2)] == ["apart", "apart:end"] * (len(tags) // 2), tags
    assert db.execute(
        "SELECT running_pid FROM pgqueue.maintenance WHERE service = 'apart'"
    ).fetchone() == (None,)


class Batches(Service):
    """A service with a backlog of ``batches`` full batches, and an interval long enough
    that only "run again at once" can get through it within the test."""

    def __init__(self, name: str, batches: int) -> None:
        super().__init__(3600.0)
        self.name = name
        self.batches = batches

    def work(self, conn: Connection) -> bool:
        conn.execute("INSERT INTO test_runs (tag, pid) VALUES (%s, pg_backend_pid())", (self.name,))
        done = conn.execute("SELECT count(*) FROM test_runs WHERE tag = %s", (self.name,))
        return bool(done.fetchone()[0] < self.batches)


def test_a_full_batch_is_carried_on_at_once_by_whichever_runner_looks(app, db, dsn):
    runners = [MaintenanceRunner(dsn, [Batches("backlog", 6)]) for _ in range(4)]
    _run_together(runners, lambda: runs_of(db, "backlog") >= 6)
    assert runs_of(db, "backlog") == 6
    # the last batch was not full: the next pass waits its interval
    (due_in,) = db.execute(
        "SELECT extract(epoch FROM next_run_at - now()) FROM pgqueue.maintenance"
        " WHERE service = 'backlog'"
    ).fetchone()
    assert due_in > 3000


def test_the_table_shows_when_each_service_last_ran_and_who_ran_it(app, db, worker, monkeypatch):
    monkeypatch.setenv("PGQUEUE_TEST_CONF", json.dumps({"worker_rescue_interval": 0.2}))
    w = worker("-c", "1", "-P", "threads")
    name = name_of(db, w.pid)

    def ran() -> list[Any]:
        return db.execute(
            "SELECT service, last_worker, last_started_at <= last_finished_at,"
            "       last_finished_at <= now(), running_pid, last_error"
            "  FROM pgqueue.maintenance WHERE last_finished_at IS NOT NULL ORDER BY service"
        ).fetchall()

    wait_for(lambda: len(ran()) == len(SERVICES), what="every service to run once")
    assert ran() == [(s, name, True, True, None, None) for s in sorted(SERVICES)]
    # the rescue runs every 0.2 s: its row moves on
    (first,) = db.execute(
        "SELECT last_started_at FROM pgqueue.maintenance WHERE service = 'rescue'"
    ).fetchone()
    wait_for(
        lambda: db.execute(
            "SELECT last_started_at > %s FROM pgqueue.maintenance WHERE service = 'rescue'",
            (first,),
        ).fetchone()[0],
        what="the next rescue",
    )
