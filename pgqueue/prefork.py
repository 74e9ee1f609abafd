"""The prefork pool: jobs run in child processes, so CPU-bound tasks use every core; a hard
time limit kills the child and a new one replaces it.

The pool also holds up to ``ahead`` jobs, already STARTED in the database, waiting in the
parent for the first child to free up (pgqueue.ahead): a child finishing a job gets the
next one at once, without waiting for the round trip that marks a job STARTED. A waiting
job has no deadline yet: its time limits start when it is sent to a child, and a child
killed for its own job's hard limit leaves the waiting jobs to its replacement."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import multiprocessing
import resource
import signal
import time
from typing import TYPE_CHECKING

from .exceptions import TimeLimitExceeded, WorkerLostError
from .execution import Job, Outcome, lost
from .pool import Pool, Slot, deadlines, run_with_soft_limit

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from .app import PgQueue

log = logging.getLogger("pgqueue.worker")


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
        ahead: int = 0,
    ) -> None:
        super().__init__(app, concurrency, hostname)
        self.ahead = max(0, ahead)
        # STARTED jobs waiting for a free child, with their time limits (soft, hard) and a
        # slot whose deadlines start only when a child gets the job.
        self._waiting: collections.deque[tuple[Slot, float | None, float | None]] = (
            collections.deque()
        )
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

    def queue_room(self) -> int:
        return self.ahead - len(self._waiting)

    def queued(self) -> int:
        return len(self._waiting)

    def take_queued(self) -> list[Job]:
        jobs = [slot.job for slot, _soft, _hard in self._waiting]
        self._waiting.clear()
        return jobs

    def running(self) -> list[Slot]:
        running = [c.slot for c in self._children if c.slot is not None]
        return running + [slot for slot, _soft, _hard in self._waiting]

    def fds(self) -> list[int]:
        return [c.conn.fileno() for c in self._children]

    def next_deadline(self) -> float | None:
        # The child raises its own soft limit (SIGALRM); only the hard one is ours to act
        # on. Counting a passed soft deadline would keep the claim loop from sleeping while
        # a task that caught SoftTimeLimitExceeded carries on.
        times = [slot.hard_deadline for slot in self.running() if slot.hard_deadline is not None]
        return min(times) if times else None

    def submit(self, job: Job, soft: float | None, hard: float | None) -> None:
        self._waiting.append((Slot(job, time.monotonic(), None, None), soft, hard))
        self._dispatch()

    def _dispatch(self) -> None:
        """Send waiting jobs to the idle children, oldest first."""
        for index, child in enumerate(self._children):
            if not self._waiting:
                return
            if child.slot is None:
                slot, soft, hard = self._waiting.popleft()
                self._send(index, slot.job, soft, hard)

    def _send(self, index: int, job: Job, soft: float | None, hard: float | None) -> None:
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
        child.slot = Slot(job, now, *deadlines(now, soft, hard))

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
        self._dispatch()
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
                self._dispatch()
                return True
        for entry in self._waiting:
            if entry[0].job.id == job_id:
                # Not begun: no child to kill. The revoke already ended it in the database.
                self._waiting.remove(entry)
                log.info("job %s revoked while it waited for a child; dropped", job_id)
                return True
        return False

    def close(self) -> None:
        for child in self._children:
            self._stop_child(child, kill=False)
        self._children = []

    def kill(self) -> None:
        self._waiting.clear()  # STARTED: rescued as the running jobs are
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
