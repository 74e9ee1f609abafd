"""Execution pools: where claimed jobs run. The worker's claim loop feeds them.

- ``prefork`` (default): child processes; CPU-bound tasks use every core; hard time limits
  kill the child and a new one replaces it.
- ``threads``: threads in the worker process, for I/O-bound tasks; soft limits only.
- ``solo``: runs the task in the worker process itself, one at a time; soft limits only.
- ``asyncio`` (asyncpool.py): ``async def`` tasks as asyncio tasks on one event loop per
  worker process, so ``-c 500`` costs no 500 threads; soft limits cancel the coroutine (it
  sees SoftTimeLimitExceeded), a hard limit ends the job and abandons the coroutine; plain
  ``def`` tasks run in a few threads beside the loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from typing import TYPE_CHECKING

from .asyncpool import AsyncioPool
from .exceptions import ConfigurationError, SoftTimeLimitExceeded
from .execution import Job, Outcome, execute
from .pool import Pool, Slot, deadlines, raise_in_thread, run_with_soft_limit
from .prefork import PreforkPool

if TYPE_CHECKING:
    from .app import PgQueue

log = logging.getLogger("pgqueue.worker")


# -- threads ---------------------------------------------------------------------------


class ThreadPool(Pool):
    name = "threads"

    def __init__(self, app: PgQueue, concurrency: int, hostname: str) -> None:
        super().__init__(app, concurrency, hostname)
        self._inbox: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._outbox: queue.SimpleQueue[tuple[str, Outcome]] = queue.SimpleQueue()
        self._slots: dict[str, tuple[int | None, Slot]] = {}
        # The running jobs that have a time limit: the only ones the loop must watch, so a
        # pool of hundreds of threads running jobs without limits costs nothing per turn.
        self._timed: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._woken = False

    def start(self) -> None:
        for n in range(self.concurrency):
            thread = threading.Thread(target=self._run, name=f"pgqueue-thread-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run(self) -> None:
        while True:
            job = self._inbox.get()
            if job is None:
                return
            with self._lock:
                _ident, slot = self._slots[job.id]
                self._slots[job.id] = (threading.get_ident(), slot)
            try:
                outcome = execute(self.app, job, self.hostname)
            except SoftTimeLimitExceeded as exc:  # raised between the task and its outcome
                outcome = Outcome.failure(job, exc)
            self._outbox.put((job.id, outcome))
            if not self._woken:
                # One wake-up per collect() is enough: it takes every outcome there is.
                self._woken = True
                os.write(self._wake_w, b"x")

    def free_slots(self) -> int:
        return self.concurrency - len(self._slots)

    def running(self) -> list[Slot]:
        with self._lock:
            return [slot for _, slot in self._slots.values()]

    def busy(self) -> int:
        return len(self._slots)

    def fds(self) -> list[int]:
        return [self._wake_r]

    def submit(self, job: Job, soft: float | None, hard: float | None) -> None:
        now = time.monotonic()
        with self._lock:
            self._slots[job.id] = (None, Slot(job, now, *deadlines(now, soft, hard)))
            if soft or hard:
                self._timed.add(job.id)
        self._inbox.put(job)

    def collect(self) -> list[Outcome]:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        # Cleared after the pipe is read and before the outbox is emptied: an outcome put
        # from now on, which this call may miss, writes the pipe again.
        self._woken = False
        done = []
        while True:
            try:
                done.append(self._outbox.get_nowait())
            except queue.Empty:
                break
        with self._lock:
            for job_id, _outcome in done:
                self._slots.pop(job_id, None)
                self._timed.discard(job_id)
        outcomes = [outcome for _job_id, outcome in done]
        if not self._timed:
            return outcomes
        now = time.monotonic()
        with self._lock:
            for job_id in list(self._timed):
                ident, slot = self._slots[job_id]
                if slot.soft_deadline is not None and now >= slot.soft_deadline and ident:
                    raise_in_thread(ident, SoftTimeLimitExceeded)
                    self._slots[job_id] = (
                        ident,
                        Slot(slot.job, slot.started, None, slot.hard_deadline, slot.warned),
                    )
                elif (
                    slot.hard_deadline is not None and now >= slot.hard_deadline and not slot.warned
                ):
                    log.warning(
                        "%s: past its hard time limit; the threads pool cannot stop it",
                        slot.job.label,
                    )
                    slot.warned = True
        return outcomes

    def next_deadline(self) -> float | None:
        if not self._timed:
            return None
        with self._lock:
            slots = [self._slots[job_id][1] for job_id in self._timed]
        times = [
            t
            for slot in slots
            for t in (slot.soft_deadline, None if slot.warned else slot.hard_deadline)
            if t is not None
        ]
        return min(times) if times else None

    def close(self) -> None:
        for _ in self._threads:
            self._inbox.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []


# -- solo ------------------------------------------------------------------------------


class SoloPool(Pool):
    name = "solo"
    runs_inline = True
    fixed_concurrency = 1

    def __init__(self, app: PgQueue, concurrency: int, hostname: str) -> None:
        super().__init__(app, 1, hostname)
        self._done: list[Outcome] = []

    def free_slots(self) -> int:
        return 1

    def running(self) -> list[Slot]:
        return []

    def submit(self, job: Job, soft: float | None, hard: float | None) -> None:
        self._done.append(run_with_soft_limit(self.app, job, self.hostname, soft))

    def collect(self) -> list[Outcome]:
        done, self._done = self._done, []
        return done


POOLS: dict[str, type[Pool]] = {
    "prefork": PreforkPool,
    "threads": ThreadPool,
    "solo": SoloPool,
    "asyncio": AsyncioPool,
}


def pool_kind(name: str) -> type[Pool]:
    """The pool class called ``name`` (-P), or a ConfigurationError listing the choices."""
    if name not in POOLS:
        raise ConfigurationError(f"unknown pool {name!r}: choose one of {', '.join(POOLS)}")
    return POOLS[name]


__all__ = ["POOLS", "AsyncioPool", "Pool", "PreforkPool", "SoloPool", "ThreadPool", "pool_kind"]
