"""The asyncio pool (``-P asyncio``): async def tasks as asyncio tasks on one event loop per
worker process, with real workers and a real Postgres."""

from __future__ import annotations

import signal
import time

import pytest

from pgqueue import states
from pgqueue.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from tests import taskapp
from tests.conftest import wait_for


def threads_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads: line")


def tags(db, like: str) -> set[str]:
    return {t for (t,) in db.execute("SELECT tag FROM test_runs WHERE tag LIKE %s", (like,))}


def test_500_sleeping_tasks_run_at_once_in_one_process_on_few_threads(app, worker):
    w = worker("-P", "asyncio", "-c", "500")
    results = app.enqueue_many([taskapp.nap.s(3) for _ in range(500)])
    # While they sleep: all 500 running, on a handful of threads.
    wait_for(
        lambda: sum(r.state == states.STARTED for r in results[::50]) == 10,
        what="the jobs to start",
    )
    threads = threads_of(w.pid)
    spans = [r.get(timeout=120) for r in results]
    last_start = max(start for start, _ in spans)
    first_end = min(end for _, end in spans)
    assert last_start < first_end, "some job started only after another had finished"
    assert threads < 20, f"{threads} threads for 500 running jobs"


def test_each_task_sees_its_own_request(app, worker):
    worker("-P", "asyncio", "-c", "50")
    results = app.enqueue_many([taskapp.async_request_id.s(0.2) for _ in range(50)])
    assert [r.get(timeout=60) for r in results] == [r.id for r in results]


def test_a_soft_time_limit_cancels_an_async_task_as_soft_time_limit_exceeded(app, worker):
    worker("-P", "asyncio", "-c", "4")
    failed = taskapp.async_soft_limited.delay(False)
    caught = taskapp.async_soft_limited.delay(True)
    per_call = taskapp.nap.apply_async((30,), soft_time_limit=0.5)
    with pytest.raises(SoftTimeLimitExceeded):
        failed.get(timeout=30)
    assert failed.state == states.FAILURE
    assert caught.get(timeout=30) == "cleaned up"
    with pytest.raises(SoftTimeLimitExceeded):
        per_call.get(timeout=30)


def test_a_soft_time_limit_cancels_what_the_task_started(app, db, worker):
    worker("-P", "asyncio", "-c", "2")
    r = taskapp.soft_limited_fan_out.delay("fan-out")
    with pytest.raises(SoftTimeLimitExceeded):
        r.get(timeout=30)
    wait_for(lambda: tags(db, "fan-out:cancelled"), what="the child task to be cancelled")


def test_a_hard_time_limit_ends_the_job_and_cancels_its_coroutine(app, db, worker):
    w = worker("-P", "asyncio", "-c", "4")
    r = taskapp.cancellable.apply_async(("hard",), time_limit=1)
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=30)
    assert "hard time limit (1 s) exceeded" in w.output()
    wait_for(lambda: tags(db, "hard:cancelled"), what="the coroutine to be cancelled")
    assert taskapp.async_add.delay(1, 2).get(timeout=30) == 3


def test_a_coroutine_blocking_the_loop_past_its_hard_limit_is_named(app, worker):
    w = worker("-P", "asyncio", "-c", "4")
    r = taskapp.blocks_the_loop.delay(3)
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=30)
    wait_for(lambda: "while it blocks the event loop" in w.output(), what="the log line")
    line = next(li for li in w.output().splitlines() if "blocks the event loop" in li)
    assert f"blocks_the_loop[{r.id}]" in line
    assert taskapp.async_add.delay(1, 2).get(timeout=30) == 3


def test_sync_tasks_run_in_threads_beside_the_loop(app, worker):
    worker("-P", "asyncio", "-c", "10")
    blocking = taskapp.thread_name.delay(6)
    wait_for(lambda: blocking.state == states.STARTED, what="the sync task to start")
    # The loop is not blocked by the sync task: an async one finishes meanwhile.
    assert taskapp.nap.delay(0.1).get(timeout=30)
    assert blocking.state == states.STARTED
    assert blocking.get(timeout=30).startswith("pgqueue-sync")
    assert taskapp.add.delay(2, 2).get(timeout=30) == 4


def test_a_soft_time_limit_stops_a_sync_task_in_the_asyncio_pool(app, worker):
    worker("-P", "asyncio", "-c", "2")
    assert taskapp.soft_limited.delay().get(timeout=30) == "cleaned up"


def test_a_sync_task_past_its_hard_limit_fails_and_does_not_hold_up_shutdown(app, worker):
    w = worker("-P", "asyncio", "-c", "2")
    r = taskapp.hard_limited.delay()  # sleeps 30 s in its thread, which cannot be stopped
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=30)
    assert "its thread cannot be stopped" in w.output()
    stopping = time.monotonic()
    assert w.stop() == 0
    assert time.monotonic() - stopping < 20, "the worker waited for the abandoned thread"


def test_an_async_task_retries_and_autoretries(app, worker):
    worker("-P", "asyncio", "-c", "4")
    flaky = taskapp.async_flaky.delay(2)
    auto = taskapp.async_autoretried.delay()
    assert flaky.get(timeout=30) == 2
    assert flaky.retries == 2
    with pytest.raises(OSError, match="still down"):
        auto.get(timeout=30)
    assert auto.retries == 2


def test_warm_shutdown_waits_for_running_coroutines(app, db, worker):
    w = worker("-P", "asyncio", "-c", "20")
    results = app.enqueue_many([taskapp.nap.s(2) for _ in range(20)])
    wait_for(lambda: all(r.state == states.STARTED for r in results), what="all to start")
    w.signal(signal.SIGTERM)
    assert w.proc.wait(60) == 0, w.output()
    assert all(r.state == states.SUCCESS for r in results)


def test_cold_shutdown_cancels_running_coroutines(app, db, worker):
    w = worker("-P", "asyncio", "-c", "4")
    r = taskapp.cancellable.delay("cold")
    wait_for(lambda: tags(db, "cold:started"), what="the task to start")
    w.signal(signal.SIGTERM)
    wait_for(lambda: "warm shutdown" in w.output(), what="the warm shutdown to begin")
    w.signal(signal.SIGTERM)
    assert w.proc.wait(30) == 1, w.output()
    assert tags(db, "cold:%") == {"cold:started", "cold:cancelled"}
    assert r.state == states.STARTED  # left to be rescued, as after any cold shutdown


def test_revoke_with_terminate_cancels_the_coroutine(app, db, worker):
    w = worker("-P", "asyncio", "-c", "4")
    r = taskapp.cancellable.delay("revoked")
    other = taskapp.nap.delay(1)
    wait_for(lambda: tags(db, "revoked:started"), what="the task to start")
    assert app.control.revoke(r.id, terminate=True) == [r.id]
    wait_for(lambda: tags(db, "revoked:cancelled"), what="the coroutine to be cancelled")
    assert "cancelled its coroutine" in w.output()
    assert app.AsyncResult(r.id).state == states.REVOKED
    assert other.get(timeout=30)  # the others go on


def test_task_signals_fire_for_async_tasks_on_the_loop(app, db, worker):
    w = worker("-A", "tests.signalapp:app", "-P", "asyncio", "-c", "4")
    ok = taskapp.async_add.delay(1, 2)
    retried = taskapp.async_flaky.delay(1)
    assert ok.get(timeout=60) == 3
    assert retried.get(timeout=60) == 1

    def seen(task_id: str) -> list[str]:
        rows = db.execute(
            "SELECT tag, pid FROM test_runs WHERE tag LIKE %s ORDER BY at", (f"signal:%:{task_id}",)
        ).fetchall()
        assert {pid for _, pid in rows} <= {w.pid}
        return [tag.split(":")[1] for tag, _ in rows]

    wait_for(lambda: seen(ok.id).count("task_postrun") == 1, what="the signals of async_add")
    assert seen(ok.id) == ["task_prerun", "task_success", "task_postrun"]
    wait_for(lambda: seen(retried.id).count("task_postrun") == 2, what="both attempts")
    assert seen(retried.id) == [
        "task_prerun", "task_retry", "task_postrun",
        "task_prerun", "task_success", "task_postrun",
    ]  # fmt: skip
