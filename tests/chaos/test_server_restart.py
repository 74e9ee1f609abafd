"""The database server restarts while workers of every pool are busy: they reconnect and
nothing is lost.

The server is a private one the test makes with initdb and restarts with pg_ctl, never the
shared one. A fast restart (clean shutdown) is a blip: every job ends once, no job runs
twice. An immediate restart is a crash: the server recovers from its WAL, and a claim
committed without waiting for the WAL flush (every claim but an at-most-once job's, see
docs/recovery.md) may be forgotten, so an at-least-once job may run again; nothing is
lost and an at-most-once job still never runs twice.
"""

from __future__ import annotations

import random
import time
from typing import Any

import psycopg
import pytest

from tests.chaos import chaosapp
from tests.chaos.conftest import (
    PrivateServer,
    Workers,
    analyse,
    create_tables,
    enqueue,
    explain,
    job_mix,
)
from tests.conftest import wait_for

JOBS = 6000
POOLS = [["-P", "prefork", "-c", "3"], ["-P", "threads", "-c", "4"], ["-P", "solo"]]
CONF = {"worker_reconnect_grace": 5.0}


def _count(dsn: str, query: str) -> int:
    """A count on a fresh connection (the server may have just restarted); -1 while it is
    not accepting connections."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
            (n,) = conn.execute(query).fetchone() or (0,)
            return int(n)
    except psycopg.OperationalError:
        return -1


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_workers_ride_out_a_server_restart_mid_load_and_lose_nothing(
    mode: str,
    private_server: PrivateServer,
    chaos_workers: Workers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dsn = private_server.dsn()
    monkeypatch.setenv("PGQUEUE_DSN", dsn)
    chaosapp.app.close()
    chaosapp.app.migrate()
    with psycopg.connect(dsn, autocommit=True) as db:
        create_tables(db)
        workers = [
            chaos_workers.start(dsn, f"restart-{i}", *args, conf=CONF).wait_ready(db)
            for i, args in enumerate(POOLS)
        ]
        enqueue(db, job_mix(random.Random(JOBS), JOBS))
    chaosapp.app.close()
    finished = "SELECT count(*) FROM pgqueue.results"
    wait_for(lambda: _count(dsn, finished) > JOBS // 3, timeout=120, what="a third done")
    began = time.monotonic()
    private_server.pg_ctl("restart", mode=mode)
    print(f"pg_ctl restart -m {mode}: {time.monotonic() - began:.1f}s")

    def drained() -> bool:
        return _count(dsn, "SELECT count(*) FROM pgqueue.jobs") == 0 and (
            _count(dsn, finished) >= JOBS
        )

    try:
        wait_for(drained, timeout=180, what="every job to end after the restart")
    except AssertionError:
        raise AssertionError(
            f"not drained: {_count(dsn, finished)} results of {JOBS}\n{chaos_workers.logs()}"
        ) from None
    with psycopg.connect(dsn, autocommit=True) as db:
        report = analyse(db)
        print(report.summary())
        for w in workers:
            assert w.proc.poll() is None, f"{w.name} exited:\n{w.output()}"
            assert "database connection restored" in w.output(), w.output()[-3000:]
        assert report.results == JOBS and report.missing_results == 0, report.summary()
        assert report.left_in_jobs == [], report.summary()
        assert report.at_most_once_twice == [], report.summary()
        assert report.false_worker_lost == [], (
            f"at-most-once jobs recorded WorkerLostError though no worker died; "
            f"{report.summary()}\n{explain(db, [r[0] for r in report.false_worker_lost[:5]])}"
        )
        if mode == "fast":
            # No process died: a repeated run is a blip taken for death.
            assert report.repeats == [], (
                f"{len(report.repeats)} jobs ran again after a clean restart; "
                f"{report.summary()}\n{explain(db, [r[0] for r in report.repeats[:5]])}"
            )
            assert report.overlaps == [], report.summary()
        failed: dict[tuple[str, str], Any] = {
            key: n
            for key, n in report.states.items()
            if not key[1].startswith("SUCCESS")
            and key != ("chaos.once", "FAILURE/pgqueue.exceptions.WorkerLostError")
        }
        assert failed == {}, report.summary()
    for w in workers:
        assert w.stop() == 0, w.output()[-3000:]
