"""Concurrency and rate limits, for the whole cluster: real workers, counted from the jobs
and results tables (their database timestamps), never from one worker's view."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pgqueue import PgQueue
from pgqueue.cli import main as cli_main
from pgqueue.exceptions import ConfigurationError
from tests import taskapp
from tests.conftest import cpu_seconds, dsn_of, wait_for


def cli_run(dsn: str, *args: str) -> Any:
    return CliRunner().invoke(cli_main, ["--dsn", dsn, *args])


def max_overlap(intervals: list[tuple[Any, Any]]) -> int:
    """The most intervals [start, end] that hold at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def runs(db: psycopg.Connection[Any], task: str) -> list[tuple[Any, ...]]:
    """(started, done, result) of each successful run of ``task``."""
    return db.execute(
        "SELECT date_started, date_done, result FROM pgqueue.results"
        " WHERE task_name = %s AND state = 'SUCCESS' ORDER BY date_started",
        (task,),
    ).fetchall()


def running_now(db: psycopg.Connection[Any], task: str) -> int:
    (n,) = db.execute(
        "SELECT count(*) FROM pgqueue.jobs WHERE task_name = %s AND state = 'STARTED'", (task,)
    ).fetchone()
    return int(n)


def test_a_concurrency_limit_of_two_holds_over_four_workers(app, db, worker):
    for _ in range(4):
        worker("-c", "3", "--pool", "threads")
    jobs = [taskapp.two_at_a_time.delay(0.3) for _ in range(12)]
    sampled = []
    deadline = time.monotonic() + 120
    while not all(r.ready() for r in jobs):
        sampled.append(running_now(db, "tests.taskapp.two_at_a_time"))
        assert time.monotonic() < deadline, "the jobs did not finish"
        time.sleep(0.02)
    assert max(sampled) <= 2
    done = runs(db, "tests.taskapp.two_at_a_time")
    assert len(done) == 12
    # From each job's claim to its outcome's write, never more than two.
    assert max_overlap([(s, e) for s, e, _ in done]) == 2


def test_a_concurrency_limit_per_argument_allows_one_per_customer(app, db, worker):
    for _ in range(4):
        worker("-c", "2", "--pool", "threads")
    jobs = [taskapp.sync_account.delay(c, 0.2) for c in (1, 2, 3) for _ in range(4)]
    for r in jobs:
        r.get(timeout=120)
    done = runs(db, "tests.taskapp.sync_account")
    by_customer: dict[int, list[tuple[Any, Any]]] = {}
    for started, finished, customer in done:  # sync_account returns its customer
        by_customer.setdefault(customer, []).append((started, finished))
    assert sorted(by_customer) == [1, 2, 3]
    assert all(max_overlap(spans) == 1 for spans in by_customer.values())
    # one per customer, not one in all: different customers ran side by side
    assert max_overlap([(s, e) for s, e, _ in done]) >= 2


def test_the_limit_key_is_read_from_keyword_arguments_too(app, db, worker):
    jobs = [taskapp.sync_account.apply_async(kwargs={"customer_id": 7, "seconds": 0.2})]
    jobs += [taskapp.sync_account.delay(7, 0.2) for _ in range(3)]
    worker("-c", "4", "--pool", "threads")
    for r in jobs:
        assert r.get(timeout=60) == 7
    spans = [(s, e) for s, e, _ in runs(db, "tests.taskapp.sync_account")]
    assert max_overlap(spans) == 1


def test_a_rate_limit_of_20_per_second_holds_over_four_workers_without_busy_waiting(
    app, db, worker
):
    n = 60
    workers = [worker("-c", "2", "--pool", "threads") for _ in range(4)]
    cpu_before = [cpu_seconds(w.pid) for w in workers]
    t0 = time.monotonic()
    jobs = app.enqueue_many([taskapp.rated.s(i) for i in range(n)])
    for r in jobs:
        r.get(timeout=120)
    wall = time.monotonic() - t0
    cpu = [cpu_seconds(w.pid) - before for w, before in zip(workers, cpu_before, strict=True)]
    (started,) = zip(
        *db.execute(
            "SELECT extract(epoch FROM date_started)::float8 FROM pgqueue.results"
            " WHERE task_name = 'tests.taskapp.rated' ORDER BY date_started"
        ).fetchall(),
        strict=True,
    )
    assert len(started) == n
    gaps = [b - a for a, b in itertools.pairwise(started)]
    # one start per 50 ms at most (the GCRA interval, on the database's clock)
    assert min(gaps) >= 0.05 - 1e-4
    # in any one-second window: at most 20, plus one for the tick at its edge
    assert max(sum(1 for t in started if s <= t < s + 1.0) for s in started) <= 21
    # and it does run at about that rate: 60 jobs take about 3 s
    assert 2.9 <= started[-1] - started[0] <= 10
    # Workers sleep until the next token instead of spinning: each used a small part of a
    # core (a busy-waiting loop would use most of one).
    assert max(cpu) / wall < 0.3, (cpu, wall)


def test_a_limited_task_is_never_handed_off(app, db, worker):
    w = worker("-c", "2")
    (wid,) = db.execute("SELECT id FROM pgqueue.workers WHERE pid = %s", (w.pid,)).fetchone()
    wait_for(
        lambda: db.execute(
            "SELECT count(*) FILTER (WHERE offered) = 2 FROM pgqueue.worker_slots"
            " WHERE worker_id = %s",
            (wid,),
        ).fetchone()[0],
        what="the worker to offer its slots",
    )
    with psycopg.connect(dsn_of(db)) as conn:
        r = taskapp.two_at_a_time.apply_async((0.0,), connection=conn)
        (holder,) = conn.execute(
            "SELECT worker_id FROM pgqueue.jobs WHERE id = %s", (r.id,)
        ).fetchone()
        assert holder is None
    # claimed on the NOTIFY, through claim_limited
    assert r.get(timeout=30) == 0.0


def test_a_limited_task_with_a_countdown_starts_when_due_not_at_the_next_poll(
    app, db, worker, monkeypatch
):
    # a poll a minute apart: only the job's own due time can wake the worker in time
    monkeypatch.setenv("PGQUEUE_TEST_CONF", json.dumps({"worker_poll_interval": 60}))
    worker("-c", "2", "--pool", "threads")
    (sent_at,) = db.execute("SELECT now()").fetchone()
    r = taskapp.two_at_a_time.apply_async((0.0,), countdown=1.5)
    assert r.get(timeout=30) == 0.0
    (started,) = db.execute(
        "SELECT date_started FROM pgqueue.results WHERE task_id = %s", (r.id,)
    ).fetchone()
    assert 1.5 <= (started - sent_at).total_seconds() < 15


def test_bad_limits_are_refused_when_the_task_is_declared():
    other = PgQueue("other")
    with pytest.raises(ConfigurationError, match="is not a rate"):
        other.task(rate_limit="fast")(lambda: None)
    with pytest.raises(ConfigurationError, match="is not a rate"):
        other.task(rate_limit="0/s")(lambda: None)
    with pytest.raises(ConfigurationError, match="at least 1"):
        other.task(concurrency_limit=0)(lambda: None)
    with pytest.raises(ConfigurationError, match="must name one of the task's arguments"):
        other.task(concurrency_limit=1, concurrency_key="nope")(lambda customer_id: None)
    with pytest.raises(ConfigurationError, match="needs a concurrency_limit"):
        other.task(concurrency_key="x")(lambda x: None)
    rated = other.task(rate_limit="100/m")(lambda: None)
    assert rated.controls.rate_limit == pytest.approx(100 / 60)
    assert other.task(rate_limit=5)(lambda: None).controls.rate_limit == 5.0
    assert other.task(rate_limit="1000/h")(lambda: None).controls.rate_limit == pytest.approx(
        1000 / 3600
    )


def test_a_queue_concurrency_limit_holds_over_workers_that_were_running_already(app, db, worker):
    for _ in range(3):
        worker("-c", "3", "--pool", "threads", "-Q", "slow")
    # set while the workers run: they learn it at their next claim
    assert app.control.set_queue_limits("slow", concurrency_limit=2) is True
    jobs = [taskapp.sleep.apply_async((0.3,), queue="slow") for _ in range(8)]
    for r in jobs:
        r.get(timeout=120)
    spans = [(s, e) for s, e, _ in runs(db, "tests.taskapp.sleep")]
    assert len(spans) == 8
    assert max_overlap(spans) == 2


def test_a_queue_rate_limit_spaces_its_starts_and_clearing_it_lifts_it(app, dsn, db, worker):
    changed = cli_run(dsn, "queue", "limit", "metered", "--rate", "10/s")
    assert changed.stdout.strip() == "metered: rate 10/s"
    listed = cli_run(dsn, "queue", "list").stdout
    row = next(line.split() for line in listed.splitlines() if line.startswith("metered"))
    assert row[4:6] == ["-", "10"]
    for _ in range(2):
        worker("-c", "2", "--pool", "threads", "-Q", "metered")
    jobs = app.enqueue_many([taskapp.add.s(i, i).set(queue="metered") for i in range(12)])
    for r in jobs:
        r.get(timeout=120)
    (started,) = zip(
        *db.execute(
            "SELECT extract(epoch FROM date_started)::float8 FROM pgqueue.results"
            " ORDER BY date_started"
        ).fetchall(),
        strict=True,
    )
    assert min(b - a for a, b in itertools.pairwise(started)) >= 0.1 - 1e-4
    assert cli_run(dsn, "queue", "limit", "metered").stdout.strip() == "metered: no limits"
    t0 = time.monotonic()
    fast = app.enqueue_many([taskapp.add.s(i, i).set(queue="metered") for i in range(12)])
    for r in fast:
        r.get(timeout=60)
    assert time.monotonic() - t0 < 1.1  # 12 at 10/s would take 1.1 s at least


def test_bad_queue_limits_are_refused(app):
    with pytest.raises(ValueError, match="is not a rate"):
        app.control.set_queue_limits("q", rate_limit="lots")
    with pytest.raises(ValueError, match="at least 1"):
        app.control.set_queue_limits("q", concurrency_limit=0)
