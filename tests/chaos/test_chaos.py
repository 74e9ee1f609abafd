"""Jobs through workers that are killed, cut off from the database and restarted under load.

What must hold at the end, whatever the chaos loop did: every job has exactly one final
result and none is left in pgqueue.jobs; no two runs of one job overlap; each repeated run is
explained by a kill; an at-most-once job never runs twice and is recorded WorkerLostError
only when its process was killed; no worker exits unless killed, and no prefork child
outlives its killed worker.

Definitions (tests/chaos/conftest.py holds the queries):
- a run is one row of chaos_runs, written by the task as it starts and completed as it ends;
- a run killed by the chaos loop (its process, or the prefork worker that is its parent) ends
  when the signal was sent (the database's clock, read just before), or at its own start if
  it began while the signal was on its way (before the process was seen dead);
- two runs of one job overlap when the later one started before the earlier one ended;
- a repeated run is a run followed by another run of its job without having asked for it (a
  run that raised to be retried did); it is explained by a kill of its process or parent
  sent after it started (or while it started) and before the next run started. Terminated
  database sessions explain nothing: a worker that reconnects within its grace keeps its jobs.

CI profile: 20,000 jobs. The soak, PGQUEUE_CHAOS_SOAK=1: 200,000 jobs.
"""

from __future__ import annotations

import os
import random
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from tests.chaos import chaosapp
from tests.chaos.conftest import (
    SOAK,
    ChaosWorker,
    Report,
    Workers,
    alive,
    analyse,
    clock,
    enqueue,
    explain,
    job_mix,
    record_kill,
)
from tests.conftest import wait_for

# PGQUEUE_CHAOS_JOBS overrides the count (for trying the suite out quickly).
JOBS = int(os.environ.get("PGQUEUE_CHAOS_JOBS") or (200_000 if SOAK else 20_000))
# How long the chaos goes on at most, and how long the queue then has to drain.
CHAOS_SECONDS = 3600 if SOAK else 150
DRAIN_SECONDS = 1800 if SOAK else 120
# Jobs per round of the producer, and how many of them are single calls.
ROUND, SINGLES = 2000, 100
SEED = int(os.environ.get("PGQUEUE_CHAOS_SEED") or time.time())
# PGQUEUE_CHAOS_ACTIONS narrows the chaos to some of: worker, backends, child.
ACTIONS = (os.environ.get("PGQUEUE_CHAOS_ACTIONS") or "worker,backends,child").split(",")

# Four workers of mixed pools (the worker and its pool arguments).
POOLS = [
    ["-P", "prefork", "-c", "3"],
    ["-P", "threads", "-c", "6"],
    ["-P", "solo"],
    ["-P", "prefork", "-c", "2"],
]
# Settings of the workers: a grace a blip stays well within, and that a killed worker's jobs
# do not wait long for.
CONF = {"worker_reconnect_grace": 5.0}
# The worker's connections by application_name, as pg_stat_activity shows them.
CONNECTIONS = ("pgqueue worker {}", "pgqueue outcomes {}", "pgqueue listener {}")


@dataclass
class Slot:
    """One of the four worker places: its pool and the worker filling it now."""

    index: int
    args: list[str]
    worker: ChaosWorker
    generation: int = 0


class ChaosLoop(threading.Thread):
    """Every ``interval`` seconds: SIGKILL a random worker and start a new one in its place,
    terminate some database connections of a random worker, or SIGKILL a prefork child
    (one running a job when there is one)."""

    def __init__(
        self, dsn: str, workers: Workers, slots: list[Slot], rng: random.Random, interval: float
    ) -> None:
        super().__init__(name="chaos-loop", daemon=True)
        self.dsn, self.workers, self.slots, self.rng = dsn, workers, slots, rng
        self.interval = interval
        self.halt = threading.Event()
        self.error: str | None = None
        # Children that outlived their killed worker: each may run a job twice at once.
        self.orphans: list[tuple[int, int]] = []
        self.actions: dict[str, int] = {}

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True, application_name="chaos loop") as db:
                weighed = [
                    (self.kill_worker, 3, "worker"),
                    (self.terminate_backends, 4, "backends"),
                    (self.kill_child, 3, "child"),
                ]
                actions = [(a, w) for a, w, name in weighed if name in ACTIONS]
                while not self.halt.wait(self.interval):
                    self.check_workers()
                    action = self.rng.choices(
                        [a for a, _ in actions], weights=[w for _, w in actions]
                    )[0]
                    action(db)
        except Exception:
            self.error = traceback.format_exc()

    def check_workers(self) -> None:
        """No worker may exit unless the loop killed it."""
        for slot in self.slots:
            code = slot.worker.proc.poll()
            if code is not None:
                tail = "\n".join(slot.worker.output().splitlines()[-30:])
                raise AssertionError(
                    f"worker {slot.worker.name} exited by itself (code {code}):\n{tail}"
                )

    def _count(self, action: str) -> None:
        self.actions[action] = self.actions.get(action, 0) + 1

    def kill_worker(self, db: psycopg.Connection[Any]) -> None:
        slot = self.rng.choice(self.slots)
        w = slot.worker
        children = w.children()
        at = clock(db)
        w.sigkill()
        self._count("worker SIGKILL")
        # The kernel kills prefork children with their parent (PR_SET_PDEATHSIG).
        deadline = time.monotonic() + 5
        while any(alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.orphans += [(w.pid, c) for c in children if alive(c)]
        record_kill(db, w.pid, "worker", at, w.name)
        slot.generation += 1
        slot.worker = self.workers.start(
            self.dsn,
            f"chaos-{slot.index}-{slot.generation}",
            *slot.args,
            conf=CONF,
            record_sync="off",
        )
        slot.worker.wait_ready(db)

    def terminate_backends(self, db: psycopg.Connection[Any]) -> None:
        w = self.rng.choice(self.slots).worker
        names = [n.format(w.name) for n in CONNECTIONS]
        chosen = self.rng.sample(names, self.rng.randint(1, len(names)))
        if self.rng.random() < 0.3:
            chosen.append("pgqueue heartbeat")
        at = clock(db)
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = ANY(%s)",
            (chosen,),
        )
        record_kill(db, w.pid, "backend", at, ", ".join(chosen))
        self._count("backends terminated")

    def kill_child(self, db: psycopg.Connection[Any]) -> None:
        prefork = [s.worker for s in self.slots if "prefork" in s.args]
        w = self.rng.choice(prefork)
        children = w.children()
        if not children:
            self._count("no child to kill")
            return
        busy = [
            pid
            for (pid,) in db.execute(
                "SELECT DISTINCT pid FROM public.chaos_runs"
                " WHERE ppid = %s AND ended IS NULL AND pid = ANY(%s)",
                (w.pid, children),
            )
        ]
        child = self.rng.choice(busy or children)
        at = clock(db)
        try:
            os.kill(child, 9)
        except ProcessLookupError:
            self._count("child gone before its kill")
            return
        wait_for(lambda: not alive(child), timeout=10, what=f"child {child} to die")
        record_kill(db, child, "child", at, w.name)
        self._count("child SIGKILL")

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=120)
        assert not self.is_alive(), "the chaos loop did not stop"
        assert self.error is None, f"the chaos loop failed:\n{self.error}"


def _poll(condition: Any, timeout: float, what: str) -> None:
    """wait_for with a slower pace, for conditions that count up to 200,000 rows."""

    def paced() -> Any:
        value = condition()
        if not value:
            time.sleep(0.2)
        return value

    wait_for(paced, timeout, what)


def _waiting(db: psycopg.Connection[Any]) -> int:
    """Jobs due and not claimed by any worker."""
    (n,) = db.execute(
        "SELECT count(*) FROM pgqueue.jobs WHERE worker_id IS NULL AND run_at <= now()"
    ).fetchone() or (0,)
    return int(n)


def _finished(db: psycopg.Connection[Any]) -> int:
    (n,) = db.execute("SELECT count(*) FROM pgqueue.results").fetchone() or (0,)
    return int(n)


@pytest.mark.timeout(4 * 3600 if SOAK else 480)
def test_chaos_loses_no_job_and_never_runs_one_twice_at_once(
    dsn: str, chaos_db: psycopg.Connection[Any], chaos_workers: Workers
) -> None:
    db = chaos_db
    rng = random.Random(SEED)
    print(f"chaos seed {SEED} (PGQUEUE_CHAOS_SEED={SEED} repeats the same choices)")
    chaosapp.app.close()
    slots = [
        Slot(i, args, chaos_workers.start(dsn, f"chaos-{i}-0", *args, conf=CONF, record_sync="off"))
        for i, args in enumerate(POOLS)
    ]
    for s in slots:
        s.worker.wait_ready(db)
    chaos = ChaosLoop(dsn, chaos_workers, slots, rng, interval=1.0)
    started = time.monotonic()
    # Jobs handed to each worker's slots, as last seen (a killed worker's slots go away).
    handed: dict[Any, int] = {}
    try:
        # Rounds of a batch (enqueue_many) and, once the workers have taken it and gone
        # idle, single calls (apply_async) that the insert hands straight to an idle
        # worker's free slot: the chaos hits both paths.
        chaos.start()
        for offset in range(0, JOBS, ROUND):
            sigs = job_mix(rng, min(ROUND, JOBS - offset))
            singles, sigs = sigs[:SINGLES], sigs[SINGLES:]
            enqueue(db, sigs)
            _poll(
                lambda: _waiting(db) < 20 or chaos.error,
                timeout=CHAOS_SECONDS,
                what="the workers to take the batch",
            )
            for sig in singles:
                enqueue(db, [sig], single=True)
                time.sleep(0.005)
            for worker_id, n in db.execute(
                "SELECT worker_id, sum(handoffs) FROM pgqueue.worker_slots GROUP BY 1"
            ):
                handed[worker_id] = max(handed.get(worker_id, 0), n)
        _poll(
            lambda: (
                _finished(db) > JOBS * 0.9
                or time.monotonic() - started > CHAOS_SECONDS
                or chaos.error
            ),
            timeout=CHAOS_SECONDS + 60,
            what="the chaos phase to end",
        )
    finally:
        chaos.stop()
        chaos_seconds = time.monotonic() - started
        chaosapp.app.close()

    def drained() -> bool:
        (left,) = db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() or (0,)
        return left == 0 and _finished(db) >= JOBS

    try:
        _poll(drained, timeout=DRAIN_SECONDS, what="every job to end")
    except AssertionError:
        stuck = db.execute(
            "SELECT state, worker_id IS NOT NULL, count(*) FROM pgqueue.jobs GROUP BY 1, 2"
        ).fetchall()
        raise AssertionError(
            f"jobs left after {DRAIN_SECONDS}s of draining (state, held, count): {stuck}\n"
            f"{analyse(db).summary()}\n{chaos_workers.logs()}"
        ) from None
    total = time.monotonic() - started
    for s in slots:
        s.worker.stop()
    report: Report = analyse(db)
    print(
        f"{JOBS} jobs in {total:.0f}s ({chaos_seconds:.0f}s of chaos: {chaos.actions}), "
        f"at least {sum(handed.values())} handed to idle workers; "
        f"{report.summary()}"
    )
    if ACTIONS == ["worker", "backends", "child"]:
        assert len(chaos.actions) == 3, f"some kind of chaos never happened: {chaos.actions}"
    assert not chaos.orphans, (
        f"prefork children outlived their SIGKILLed worker (worker, child): {chaos.orphans}"
    )
    assert report.jobs == JOBS
    assert sum(handed.values()) > 0, "no job was handed to an idle worker: the test missed a path"
    assert report.results == JOBS and report.missing_results == 0, report.summary()
    assert report.left_in_jobs == [], report.summary()
    assert report.overlaps == [], (
        f"{len(report.overlaps)} overlapping pairs of runs of one job; {report.summary()}\n"
        f"runs of the first ones and all kills:\n"
        f"{explain(db, [o[0] for o in report.overlaps[:5]])}\n"
        f"{chaos_workers.grep([str(o[0]) for o in report.overlaps[:5]])}"
    )
    assert report.unexplained_repeats == [], (
        f"{len(report.unexplained_repeats)} repeated runs no kill explains; "
        f"{report.summary()}\nruns of the first ones and all kills:\n"
        f"{explain(db, [r[0] for r in report.unexplained_repeats[:5]])}\n"
        f"{chaos_workers.grep([str(r[0]) for r in report.unexplained_repeats[:5]])}"
    )
    assert report.at_most_once_twice == [], report.summary()
    assert report.false_worker_lost == [], (
        f"{len(report.false_worker_lost)} at-most-once jobs recorded WorkerLostError though "
        f"no kill ended their run; {report.summary()}\n"
        f"{explain(db, [r[0] for r in report.false_worker_lost[:5]])}"
    )
    # Retried and at-least-once jobs all end SUCCESS (20 retries are far more than the chaos
    # takes); only at-most-once jobs may end WorkerLostError.
    failed = {
        key: n
        for key, n in report.states.items()
        if not key[1].startswith("SUCCESS")
        and key != ("chaos.once", "FAILURE/pgqueue.exceptions.WorkerLostError")
    }
    assert failed == {}, report.summary()
