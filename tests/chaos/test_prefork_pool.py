"""A prefork child killed while idle (OOM killer, a stray SIGKILL) does not take its worker
down with it: found by the chaos suite, where such a kill landing between the pool's collect()
and its next submit() made the worker exit (the send raised BrokenPipeError; click turns an
EPIPE into a silent exit 1), dropping the outcomes of its other children's jobs."""

from __future__ import annotations

import datetime as dt
import os
import signal

import pytest

from pgqueue import states
from pgqueue.execution import Job
from pgqueue.pools import PreforkPool
from tests.chaos.conftest import alive
from tests.conftest import wait_for
from tests.taskapp import app


def _job(n: int) -> Job:
    return Job(
        id=f"00000000-0000-7000-8000-{n:012d}",
        seq=n,
        task_name="tests.taskapp.add",
        queue="default",
        args=[n, 1],
        kwargs={},
        priority=0,
        run_at=dt.datetime.now(dt.timezone.utc),
        expires_at=None,
        expired=False,
        retries=0,
        max_retries=None,
        time_limit=None,
        soft_time_limit=None,
        options={},
        attempt=1,
    )


@pytest.mark.timeout(60)
def test_job_for_a_child_that_died_idle_runs_on_its_replacement() -> None:
    app.import_task_modules()
    assert "tests.taskapp.add" in app.tasks
    pool = PreforkPool(app, 1, "prefork-test")
    pool.start()
    try:
        (child,) = pool._children
        os.kill(child.process.pid, signal.SIGKILL)
        wait_for(lambda: not alive(child.process.pid), timeout=10, what="the child to die")
        # The pool has not collected since: it still counts the dead child as a free slot.
        pool.submit(_job(41), None, None)
        outcomes = wait_for(pool.collect, timeout=30, what="the job's outcome")
        assert [(o.job_id, o.state) for o in outcomes] == [(_job(41).id, states.SUCCESS)]
        assert pool._children[0].process.pid != child.process.pid
    finally:
        pool.kill()
