"""Execution pools: where claimed jobs run. The worker's claim loop feeds them.

- ``prefork`` (default): child processes; CPU-bound tasks use every core; hard time limits
  kill the child and a new one replaces it.
- ``threads``: threads in the worker process, for I/O-bound tasks; soft limits only.
- ``solo``: runs the task in the worker process itself, one at a time; soft limits only.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import queue
import resource
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import states
from .exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError
from .execution import Job, Outcome, execute, lost

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from .app import PgQueue

log = logging.getLogger("pgqueue.worker")


def _raise_soft_limit(signum: int, frame: Any) -> None:
    raise SoftTimeLimitExceeded("soft time limit exceeded")


def run_with_soft_limit(app: PgQueue, job: Job, hostname: str, soft: float | None) -> Outcome:
    """Run a job in the main thread of this process, raising SoftTimeLimitExceeded on time."""
    if not soft:
        return execute(app, job, hostname)
    previous = signal.signal(signal.SIGALRM, _raise_soft_limit)
    signal.setitimer(signal.ITIMER_REAL, soft)
    try:
        return execute(app, job, hostname)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Slot:
    """A job running in a pool, with its deadlines on the monotonic clock."""

    job: Job
    started: float
    soft_deadline: float | None
    hard_deadline: float | None
    warned: bool = False


def _deadlines(
    now: float, soft: float | None, hard: float | None
) -> tuple[float | None, float | None]:
    return (now + soft if soft else None, now + hard if hard else None)


class Pool:
    """What the worker needs from a pool."""

    name = "pool"
    enforces_hard_limit = False
    has_children = False  # jobs run in child processes (the *_per_child limits apply)
    runs_inline = False  # submit() runs the job to its end: its outcome is ready then
    fixed_concurrency: int | None = None  # runs this many at a time, whatever is asked

    def __init__(self, app: PgQueue, concurrency: int, hostname: str) -> None:
        self.app = app
        self.concurrency = concurrency
        self.hostname = hostname

    @classmethod
    def create(cls, app: PgQueue, concurrency: int, hostname: str, **limits: int | None) -> Pool:
        """A pool of this kind; ``limits`` (max_tasks_per_child, max_memory_per_child) go
        only to a pool that has_children."""
        factory: Callable[..., Pool] = cls
        return factory(app, concurrency, hostname, **(limits if cls.has_children else {}))

    def start(self) -> None:
        """Create the workers of the pool."""

    def free_slots(self) -> int:
        raise NotImplementedError

    def running(self) -> list[Slot]:
        raise NotImplementedError

    def busy(self) -> int:
        """How many jobs are running (the worker asks on every turn of its loop)."""
        return len(self.running())

    def submit(self, job: Job, soft: float | None, hard: float | None) -> None:
        raise NotImplementedError

    def fds(self) -> list[int]:
        """File descriptors that become readable when an outcome is ready."""
        return []

    def collect(self) -> list[Outcome]:
        """Outcomes ready now (without blocking), including jobs stopped by a hard limit."""
        raise NotImplementedError

    def next_deadline(self) -> float | None:
        times = [
            t
            for slot in self.running()
            for t in (slot.soft_deadline, slot.hard_deadline)
            if t is not None
        ]
        return min(times) if times else None

    def terminate(self, job_id: str) -> bool:
        """Stop a running job at once, if this pool can; True if it was stopped."""
        return False

    def close(self) -> None:
        """Let the pool's workers go once they are idle."""

    def kill(self) -> None:
        """Stop everything now (cold shutdown)."""


# -- prefork ---------------------------------------------------------------------------


def _child_main(app: PgQueue, conn: Connection, hostname: str) -> None:
    # The parent decides about shutdown; a Ctrl-C reaching the whole process group must
    # not kill a task half way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        job, soft = message
        outcome = run_with_soft_limit(app, job, hostname, soft)
        outcome.extra["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            conn.send(outcome)
        except (EOFError, OSError):
            return


def _die_with_parent() -> None:
    """On Linux, have the kernel SIGKILL this child when the worker dies.

    A worker killed with SIGKILL gets its jobs rescued and run elsewhere; an orphaned child
    still running one of them would run it twice at the same time.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


class _Child:
    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.slot: Slot | None = None
        self.tasks_done = 0


class PreforkPool(Pool):
    name = "prefork"
    enforces_hard_limit = True
    has_children = True

    def __init__(
        self,
        app: PgQueue,
        concurrency: int,
        hostname: str,
        *,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
    ) -> None:
        super().__init__(app, concurrency, hostname)
        self.max_tasks_per_child = max_tasks_per_child
        self.max_memory_per_child = max_memory_per_child
        # fork: children inherit the imported app and its task registry as they are.
        self._ctx = multiprocessing.get_context("fork")
        self._children: list[_Child] = []

    def _spawn(self) -> _Child:
        parent_end, child_end = self._ctx.Pipe()
        process = self._ctx.Process(
            target=_child_main,
            args=(self.app, child_end, self.hostname),
            name="pgqueue-child",
            daemon=True,
        )
        process.start()
        child_end.close()
        return _Child(process, parent_end)

    def start(self) -> None:
        self._children = [self._spawn() for _ in range(self.concurrency)]

    def free_slots(self) -> int:
        return sum(1 for c in self._children if c.slot is None)

    def running(self) -> list[Slot]:
        return [c.slot for c in self._children if c.slot is not None]

    def fds(self) -> list[int]:
        return [c.conn.fileno() for c in self._children]

    def next_deadline(self) -> float | None:
        # The child raises its own soft limit (SIGALRM); only the hard one is ours to act
        # on. Counting a passed soft deadline would keep the claim loop from sleeping while
        # a task that caught SoftTimeLimitExceeded carries on.
        times = [slot.hard_deadline for slot in self.running() if slot.hard_deadline is not None]
        return min(times) if times else None

    def submit(self, job: Job, soft: float | None, hard: float | None) -> None:
        index = next(i for i, c in enumerate(self._children) if c.slot is None)
        child = self._children[index]
        try:
            child.conn.send((job, soft))
        except OSError:
            # The child died idle since the last collect() (OOM killer, a stray SIGKILL).
            # The job never reached it: a fresh child runs it, rather than the error ending
            # the worker and every job its other children run.
            log.warning("idle child process exited (%s); replaced", _exit_reason(child.process))
            self._replace(index, kill=True)
            child = self._children[index]
            child.conn.send((job, soft))
        now = time.monotonic()
        child.slot = Slot(job, now, *_deadlines(now, soft, hard))

    def collect(self) -> list[Outcome]:
        outcomes: list[Outcome] = []
        now = time.monotonic()
        for index, child in enumerate(list(self._children)):
            slot = child.slot
            if slot is not None and slot.hard_deadline is not None and now >= slot.hard_deadline:
                log.error(
                    "%s: hard time limit (%.1f s) exceeded; killing child %s",
                    slot.job.label,
                    slot.hard_deadline - slot.started,
                    child.process.pid,
                )
                self._replace(index, kill=True)
                limit = slot.hard_deadline - slot.started
                outcomes.append(
                    lost(
                        slot.job,
                        TimeLimitExceeded(f"TimeLimitExceeded({limit:g})"),
                        now - slot.started,
                    )
                )
                continue
            if not child.conn.poll():
                continue
            try:
                outcome: Outcome = child.conn.recv()
            except (EOFError, OSError):
                reason = _exit_reason(child.process)
                self._replace(index, kill=True)
                if slot is not None:
                    log.error(
                        "%s: child process exited (%s) while running it", slot.job.label, reason
                    )
                    error = WorkerLostError(f"worker child exited prematurely: {reason}")
                    outcomes.append(lost(slot.job, error, now - slot.started))
                else:
                    log.warning("idle child process exited (%s); replaced", reason)
                continue
            child.slot = None
            child.tasks_done += 1
            outcomes.append(outcome)
            if self._should_retire(child, outcome):
                self._replace(index, kill=False)
        return outcomes

    def _should_retire(self, child: _Child, outcome: Outcome) -> bool:
        if self.max_tasks_per_child and child.tasks_done >= self.max_tasks_per_child:
            return True
        rss = outcome.extra.get("maxrss_kb")
        if self.max_memory_per_child and rss and rss > self.max_memory_per_child:
            log.info(
                "child %s uses %s KiB, over --max-memory-per-child; replacing it",
                child.process.pid,
                rss,
            )
            return True
        return False

    def _replace(self, index: int, *, kill: bool) -> None:
        child = self._children[index]
        self._stop_child(child, kill=kill)
        self._children[index] = self._spawn()

    def _stop_child(self, child: _Child, *, kill: bool) -> None:
        if kill:
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
        else:
            with contextlib.suppress(OSError):
                child.conn.send(None)
        child.process.join(timeout=10)
        if child.process.is_alive():
            child.process.kill()
            child.process.join()
        child.conn.close()

    def terminate(self, job_id: str) -> bool:
        for index, child in enumerate(self._children):
            if child.slot is not None and child.slot.job.id == job_id:
                self._replace(index, kill=True)
                return True
        return False

    def close(self) -> None:
        for child in self._children:
            self._stop_child(child, kill=False)
        self._children = []

    def kill(self) -> None:
        for child in self._children:
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
        self._children = []


def _exit_reason(process: BaseProcess) -> str:
    process.join(timeout=1)
    code = process.exitcode
    if code is None:
        return "still running"
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"


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
            self._slots[job.id] = (None, Slot(job, now, *_deadlines(now, soft, hard)))
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
                    # The exception lands at the thread's next Python instruction.
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(
                        ctypes.c_ulong(ident), ctypes.py_object(SoftTimeLimitExceeded)
                    )
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


POOLS: dict[str, type[Pool]] = {"prefork": PreforkPool, "threads": ThreadPool, "solo": SoloPool}

__all__ = ["POOLS", "Outcome", "Pool", "PreforkPool", "SoloPool", "ThreadPool", "states"]
