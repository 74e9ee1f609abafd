"""A worker cut off from the database mid-job, past the point where it is taken for lost.

The worker runs in its own network namespace and reaches a private server over a veth pair;
the test cuts the pair (the host end goes down) while the worker runs two jobs. It is found
lost one of two ways:

- lease: the server never sees the connections close, so the worker's liveness lock stays
  held; its heartbeat, older than worker_lost_timeout, gives it away;
- lock: the server's own keepalives (asked for in the worker's DSN) end its sessions a few
  seconds into the cut, the lock goes with them, and the rescue waits
  worker_reconnect_grace for it to come back before taking its jobs.

Its jobs then run on a worker that can reach the server. When the link comes back, the cut
worker's late outcomes are refused (the results keep the other worker's run), and it
registers again and serves new jobs.

How long the cut worker takes to notice comes from its connections' TCP settings, given in
its DSN (tcp_user_timeout, keepalives: pgqueue's defaults in pgqueue/db.py are for real
networks and take tens of seconds).
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from tests.chaos import chaosapp
from tests.chaos.conftest import (
    Netns,
    PrivateServer,
    Workers,
    create_tables,
    explain,
)
from tests.conftest import wait_for

CONF = {
    "worker_heartbeat_interval": 0.5,
    "worker_rescue_interval": 0.5,
    "worker_reconnect_grace": 2.0,
}
# How the cut worker is found lost: its worker_lost_timeout, and its sessions' options.
MODES = {
    "lease": (3.0, {}),
    "lock": (
        120.0,
        {
            "options": "-c tcp_keepalives_idle=1 -c tcp_keepalives_interval=1"
            " -c tcp_keepalives_count=2"
        },
    ),
}
# Long enough that the cut worker's copies still run when the other worker has finished
# them, and when the link comes back.
FIRST_RUN_SECONDS = 15.0


def _rows(db: psycopg.Connection[Any], query: str, *params: Any) -> list[tuple[Any, ...]]:
    return db.execute(query, params).fetchall()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("found_by", list(MODES))
def test_partitioned_worker_is_rescued_fenced_and_rejoins(
    found_by: str,
    netns: Netns,
    partition_server: PrivateServer,
    chaos_workers: Workers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = partition_server
    dsn = server.dsn()
    lost_timeout, session_options = MODES[found_by]
    conf = {**CONF, "worker_lost_timeout": lost_timeout}
    cut_dsn = server.dsn(
        netns.host_ip,
        connect_timeout=2,
        keepalives_idle=1,
        keepalives_interval=1,
        keepalives_count=2,
        tcp_user_timeout=3000,
        **session_options,
    )
    monkeypatch.setenv("PGQUEUE_DSN", dsn)
    chaosapp.app.close()
    chaosapp.app.migrate()
    db = psycopg.connect(dsn, autocommit=True)
    try:
        create_tables(db)
        cut = chaos_workers.start(
            cut_dsn, "cut-off", "-P", "threads", "-c", "2", conf=conf, netns=netns.name
        ).wait_ready(db)
        jobs = [chaosapp.first_slow.delay(FIRST_RUN_SECONDS).id for _ in range(2)]
        chaosapp.app.close()
        wait_for(
            lambda: _rows(
                db,
                "SELECT count(*) FROM public.chaos_runs WHERE worker = 'cut-off'"
                " HAVING count(*) = 2",
            ),
            timeout=30,
            what="the cut-off worker to run both jobs",
        )
        netns.cut()
        cut_at = time.monotonic()
        other = chaos_workers.start(dsn, "stand-in", "-P", "threads", "-c", "2", conf=conf)
        other.wait_ready(db)

        def done_elsewhere() -> list[tuple[Any, ...]]:
            return _rows(
                db,
                "SELECT task_id, state, result, worker FROM pgqueue.results"
                " WHERE task_id = ANY(%s) AND worker = 'stand-in'",
                jobs,
            )

        def held_session() -> list[tuple[Any, ...]]:
            # The session holding the cut worker's liveness lock, as the server sees it.
            return _rows(
                db,
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                "pgqueue worker cut-off",
            )

        if found_by == "lock":
            wait_for(lambda: not held_session(), timeout=30, what="the server to end it")
        wait_for(lambda: len(done_elsewhere()) == 2, timeout=60, what="rescue and rerun")
        rescued_after = time.monotonic() - cut_at
        if found_by == "lease":
            assert held_session(), "the server ended the cut worker's session itself"
        assert all(r[1] == "SUCCESS" and r[2] == 2 for r in done_elsewhere()), done_elsewhere()
        # The cut worker's copies are still running: its outcomes come after the restore.
        assert time.monotonic() - cut_at < FIRST_RUN_SECONDS - 2, (
            f"rescued only {rescued_after:.1f}s after the cut"
        )
        netns.restore()

        def refused() -> bool:
            return cut.output().count("discarded: the job is no longer ours") >= 2

        wait_for(refused, timeout=60, what="the cut-off worker's late outcomes to be refused")
        results = _rows(
            db,
            "SELECT task_id, state, result, worker FROM pgqueue.results WHERE task_id = ANY(%s)",
            jobs,
        )
        assert sorted(r[3] for r in results) == ["stand-in", "stand-in"], results
        runs = _rows(
            db,
            "SELECT job_id, worker, attempt, ended IS NOT NULL FROM public.chaos_runs"
            " WHERE job_id = ANY(%s) ORDER BY job_id, attempt",
            jobs,
        )
        assert sorted((w, a, e) for _, w, a, e in runs) == [
            ("cut-off", 1, True),
            ("cut-off", 1, True),
            ("stand-in", 2, True),
            ("stand-in", 2, True),
        ], explain(db, jobs)

        # It rejoins: registered again, and the only worker left serves new jobs.
        wait_for(
            lambda: _rows(db, "SELECT 1 FROM pgqueue.workers WHERE name = 'cut-off'"),
            timeout=30,
            what="the cut-off worker to register again",
        )
        # Its sessions from before the cut, which the server never saw close, are gone: one
        # connection of each kind is left.
        names = [f"pgqueue {kind} cut-off" for kind in ("worker", "outcomes", "listener")]

        def sessions() -> list[tuple[Any, ...]]:
            return _rows(
                db,
                "SELECT application_name, count(*) FROM pg_stat_activity"
                " WHERE application_name = ANY(%s) GROUP BY 1 ORDER BY 1",
                names,
            )

        try:
            wait_for(lambda: sessions() == [(n, 1) for n in sorted(names)], timeout=30)
        except AssertionError:
            raise AssertionError(f"sessions of the cut-off worker: {sessions()}") from None
        assert other.stop() == 0, other.output()
        fresh = [chaosapp.short.delay().id for _ in range(5)]
        chaosapp.app.close()
        wait_for(
            lambda: _rows(
                db,
                "SELECT count(*) FROM pgqueue.results WHERE task_id = ANY(%s) HAVING count(*) = 5",
                fresh,
            ),
            timeout=30,
            what="the rejoined worker to run new jobs",
        )
        served = _rows(
            db,
            "SELECT DISTINCT state, worker FROM pgqueue.results WHERE task_id = ANY(%s)",
            fresh,
        )
        assert served == [("SUCCESS", "cut-off")], served
        assert _rows(db, "SELECT count(*) FROM pgqueue.jobs") == [(0,)]
        assert cut.stop() == 0, cut.output()[-3000:]
        print(f"{found_by}: rescued {rescued_after:.1f}s after the cut")
    finally:
        db.close()
