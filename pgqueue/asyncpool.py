"""The asyncio pool: ``async def`` tasks run concurrently as asyncio tasks on one event loop,
in a thread of the worker process; plain ``def`` tasks run in a small pool of threads beside
it, so that they never block the loop.

The loop has a thread of its own because the worker's claim loop is synchronous: it sleeps
in select() on its connections and the pool's wake-up pipe. The two threads hand each other
jobs and outcomes through deques, and each side is woken once per batch, not once per job
(``call_soon_threadsafe`` one way, a byte on a pipe the other).

Time limits: the soft limit is a timer on the loop that cancels the job's asyncio task, as
``asyncio.timeout`` does, and the cancellation reaches the task's code as
SoftTimeLimitExceeded (``_Guarded``), so the task can catch it and clean up, as in Celery.
The hard limit is the claim loop's: at the deadline the job ends FAILURE with
TimeLimitExceeded (or is retried, as its retry policy says) and its coroutine is cancelled
and abandoned; if the loop itself is blocked (a coroutine calling blocking code), that is
logged with the task named, since no coroutine of the worker can run meanwhile.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from .execution import Job, Outcome, execute, execute_async, lost
from .pool import Pool, Slot, deadlines, raise_in_thread

if TYPE_CHECKING:
    from .app import PgQueue

log = logging.getLogger("pgqueue.worker")

# At most this many plain ``def`` tasks run at once in an asyncio pool (each in a thread of
# its own); more wait for a thread. -c sets how many jobs run at once in all.
SYNC_THREADS = 16
# How long a cold shutdown gives cancelled coroutines to run their cleanup (seconds).
COLD_CANCEL_GRACE = 1.0


@dataclass(eq=False)
class _Run(Slot):
    """A job in the asyncio pool: its slot, and how it runs."""

    is_async: bool = True
    soft: float | None = None
    atask: asyncio.Task[None] | None = None  # set on the loop
    soft_due: bool = False  # the soft limit passed and was not delivered yet
    soft_sent: bool = False
    thread: int | None = None  # a sync job: the thread running it
    timer: asyncio.TimerHandle | None = None  # an async job's soft limit


class _SoftLimitCancelled(SoftTimeLimitExceeded, asyncio.CancelledError):
    """The soft limit as a task's code sees it: SoftTimeLimitExceeded to the task, and a
    cancellation to asyncio, so that what the task awaits (``wait_for``, ``gather``,
    ``TaskGroup``) cancels what it started, as for any cancellation. It leaves ``_Guarded``
    as the plain SoftTimeLimitExceeded."""


class _Guarded:
    """The awaitable of an ``async def`` task, awaited step by step so that the pool's soft
    limit, which cancels the asyncio task, reaches the task's code as SoftTimeLimitExceeded
    rather than CancelledError; any other cancellation (revoke, hard limit, shutdown) passes
    through as it is. It also notes which job the loop is running, to name a job that
    blocks the loop."""

    def __init__(self, awaitable: Awaitable[Any], run: _Run, pool: AsyncioPool) -> None:
        self._awaitable = awaitable
        self._run = run
        self._pool = pool

    def __await__(self) -> Generator[Any, Any, Any]:
        inner = self._awaitable.__await__()
        run, pool = self._run, self._pool
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            pool.stepping = run
            try:
                yielded = inner.send(to_send) if to_throw is None else inner.throw(to_throw)
            except StopIteration as stop:
                return stop.value
            except _SoftLimitCancelled as exc:
                error = SoftTimeLimitExceeded(*exc.args).with_traceback(exc.__traceback__)
                raise error from None
            finally:
                pool.stepping = None
            to_send = to_throw = None
            try:
                to_send = yield yielded
            except GeneratorExit:
                inner.close()
                raise
            except asyncio.CancelledError as cancelled:
                to_throw = self._soft_limit() if run.soft_due else cancelled
            except BaseException as exc:
                to_throw = exc

    def _soft_limit(self) -> _SoftLimitCancelled:
        run = self._run
        run.soft_due = False
        task = asyncio.current_task()
        # The cancellation is spent here: without this, asyncio.timeout and TaskGroup in
        # the task's cleanup would take themselves for cancelled (Python >= 3.11).
        uncancel = getattr(task, "uncancel", None)
        if uncancel is not None:
            uncancel()
        return _SoftLimitCancelled(f"soft time limit ({run.soft:g} s) exceeded")


class _SyncThreads:
    """The threads of an asyncio pool for its plain ``def`` tasks, started as they are
    needed, up to SYNC_THREADS: daemons, so that a sync task abandoned at its hard limit
    cannot keep the process from exiting."""

    def __init__(self, run: Callable[[_Run], None]) -> None:
        self._run = run
        self._inbox: queue.SimpleQueue[_Run | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def submit(self, run: _Run, sync_jobs: int) -> None:
        """Run ``run`` in a thread; ``sync_jobs``: how many sync jobs the pool runs now."""
        threads = len(self._threads)
        if threads < sync_jobs and threads < SYNC_THREADS:
            thread = threading.Thread(
                target=self._serve, name=f"pgqueue-sync-{threads}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        self._inbox.put(run)

    def _serve(self) -> None:
        while True:
            run = self._inbox.get()
            if run is None:
                return
            self._run(run)

    def close(self) -> None:
        for _ in self._threads:
            self._inbox.put(None)
        # A sync task abandoned at its hard limit may still run: it holds nobody up for long.
        deadline = time.monotonic() + 5
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._threads = []


class AsyncioPool(Pool):
    name = "asyncio"
    enforces_hard_limit = True  # the job ends at its hard limit; see the module docstring
    terminates = "cancelled its coroutine"

    def __init__(self, app: PgQueue, concurrency: int, hostname: str) -> None:
        super().__init__(app, concurrency, hostname)
        self._loop = asyncio.new_event_loop()
        eager = getattr(asyncio, "eager_task_factory", None)
        if eager is not None:
            # Python >= 3.12: a job runs its first step at once, so one that never waits
            # (a no-op, a cache hit) costs no trip through the loop's queue.
            self._loop.set_task_factory(eager)
        self._thread: threading.Thread | None = None
        self._sync = _SyncThreads(self._run_sync)
        self._sync_jobs = 0  # sync jobs in the slots
        # Written by the claim loop's thread only; the loop thread gets each run through
        # the inbox.
        self._slots: dict[str, _Run] = {}
        self._timed: set[str] = set()
        self._lock = threading.Lock()
        self._inbox: collections.deque[_Run] = collections.deque()
        self._inbox_woken = False
        self._outbox: collections.deque[tuple[_Run, Outcome]] = collections.deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._woken = False
        self._kinds: dict[str, bool] = {}
        self.stepping: _Run | None = None  # the job whose code the loop is running now
        self._idle = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="pgqueue-asyncio", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            left = asyncio.all_tasks(self._loop)
            for task in left:
                task.cancel()
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(
                    asyncio.wait_for(asyncio.gather(*left, return_exceptions=True), 5)
                )
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    # -- the claim loop's side ------------------------------------------------------------

    def free_slots(self) -> int:
        return self.concurrency - len(self._slots)

    def busy(self) -> int:
        return len(self._slots)

    def running(self) -> list[Slot]:
        with self._lock:
            return list(self._slots.values())

    def fds(self) -> list[int]:
        return [self._wake_r]

    def submit(self, job: Job, soft: float | None, hard: float | None) -> None:
        now = time.monotonic()
        run = _Run(job, now, *deadlines(now, soft, hard), is_async=self._is_async(job), soft=soft)
        with self._lock:
            self._slots[job.id] = run
            if hard or (soft and not run.is_async):
                self._timed.add(job.id)
        if not run.is_async:
            self._sync_jobs += 1
            self._sync.submit(run, self._sync_jobs)
            return
        self._inbox.append(run)
        if not self._inbox_woken:
            # One wake-up of the loop takes every job queued by then (see _take_inbox).
            self._inbox_woken = True
            self._loop.call_soon_threadsafe(self._take_inbox)

    def _is_async(self, job: Job) -> bool:
        kind = self._kinds.get(job.task_name)
        if kind is None:
            task = self.app.tasks.get(job.task_name)
            kind = task is not None and inspect.iscoroutinefunction(task.run)
            self._kinds[job.task_name] = kind
        return kind

    def collect(self) -> list[Outcome]:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        # Cleared after the pipe is read and before the outbox is emptied: an outcome put
        # from now on, which this call may miss, writes the pipe again.
        self._woken = False
        outcomes = []
        with self._lock:
            while self._outbox:
                run, outcome = self._outbox.popleft()
                # A job abandoned at its hard limit has had its outcome already.
                if self._slots.get(run.job.id) is run:
                    self._forget(run)
                    outcomes.append(outcome)
        if self._timed:
            outcomes += self._enforce_limits(time.monotonic())
        return outcomes

    def _enforce_limits(self, now: float) -> list[Outcome]:
        """Soft limits of sync jobs (those of async jobs are the loop's timers) and hard
        limits of all: a job past its hard limit ends now, abandoned."""
        outcomes = []
        with self._lock:
            for job_id in list(self._timed):
                run = self._slots[job_id]
                if run.hard_deadline is not None and now >= run.hard_deadline:
                    outcomes.append(self._abandon(run, now))
                elif (
                    not run.is_async
                    and not run.soft_sent
                    and run.soft_deadline is not None
                    and now >= run.soft_deadline
                ):
                    run.soft_sent = True
                    if run.thread is not None:
                        raise_in_thread(run.thread, SoftTimeLimitExceeded)
                    else:  # still waiting for a thread: it fails without running
                        run.soft_due = True
        return outcomes

    def _forget(self, run: _Run) -> None:
        """Free the slot of a job (the caller holds the lock)."""
        del self._slots[run.job.id]
        self._timed.discard(run.job.id)
        if not run.is_async:
            self._sync_jobs -= 1

    def _abandon(self, run: _Run, now: float) -> Outcome:
        limit = run.hard_deadline - run.started if run.hard_deadline else 0.0
        self._forget(run)
        blocker = self.stepping
        if run.is_async and blocker is run:
            log.error(
                "%s: hard time limit (%g s) exceeded while it blocks the event loop (blocking "
                "code in a coroutine: no other task of this worker runs meanwhile); the job "
                "ends, its coroutine is cancelled once it lets the loop run",
                run.job.label,
                limit,
            )
        elif run.is_async:
            log.error(
                "%s: hard time limit (%g s) exceeded; the job ends, its coroutine is cancelled%s",
                run.job.label,
                limit,
                f" once {blocker.job.label} stops blocking the event loop" if blocker else "",
            )
        else:
            log.error(
                "%s: hard time limit (%g s) exceeded; the job ends, its thread cannot be "
                "stopped and runs on, its outcome discarded",
                run.job.label,
                limit,
            )
        if run.is_async:
            self._loop.call_soon_threadsafe(self._cancel, run)
        return lost(run.job, TimeLimitExceeded(f"TimeLimitExceeded({limit:g})"), now - run.started)

    def next_deadline(self) -> float | None:
        if not self._timed:
            return None
        with self._lock:
            runs = [self._slots[job_id] for job_id in self._timed]
        times = [run.hard_deadline for run in runs if run.hard_deadline is not None]
        times += [
            run.soft_deadline
            for run in runs
            if not run.is_async and not run.soft_sent and run.soft_deadline is not None
        ]
        return min(times) if times else None

    def terminate(self, job_id: str) -> bool:
        with self._lock:
            run = self._slots.get(job_id)
        if run is None or not run.is_async:
            return False
        # After the job's own _take_inbox: call_soon_threadsafe keeps the order.
        self._loop.call_soon_threadsafe(self._cancel, run)
        return True

    def close(self) -> None:
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._thread = None
        self._sync.close()

    def kill(self) -> None:
        """Cold shutdown: cancel every running coroutine and give them COLD_CANCEL_GRACE
        seconds to run their cleanup (the process exits then, whatever they do)."""
        if self._thread is None or not self._thread.is_alive():
            return
        self._idle.clear()
        self._loop.call_soon_threadsafe(self._cancel_all)
        self._idle.wait(COLD_CANCEL_GRACE)

    # -- the loop's side ------------------------------------------------------------------

    def _take_inbox(self) -> None:
        self._inbox_woken = False
        while self._inbox:
            run = self._inbox.popleft()
            run.atask = self._loop.create_task(self._run_async(run))
            if run.soft_deadline is not None and not run.atask.done():
                run.timer = self._loop.call_at(run.soft_deadline, self._soft_expired, run)

    async def _run_async(self, run: _Run) -> None:
        """An ``async def`` task, as an asyncio task of its own."""
        outcome: Outcome | None = None
        try:
            outcome = await execute_async(
                self.app, run.job, self.hostname, lambda awaitable: _Guarded(awaitable, run, self)
            )
        except asyncio.CancelledError:  # before the task's code ran: it never did
            outcome = Outcome.failure(run.job, asyncio.CancelledError("cancelled"))
        except BaseException as exc:  # pgqueue's own error: the job still ends
            log.exception("%s: error while running it", run.job.label)
            outcome = Outcome.failure(run.job, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            if run.timer is not None:
                run.timer.cancel()
            if outcome is not None:
                self._done(run, outcome)

    def _soft_expired(self, run: _Run) -> None:
        if run.atask is not None and not run.atask.done():
            run.soft_due = True
            run.atask.cancel()

    def _cancel(self, run: _Run) -> None:
        if run.atask is not None:
            run.soft_due = False  # a revoke or a hard limit is not a soft limit
            run.atask.cancel()

    def _cancel_all(self) -> None:
        tasks = [task for task in asyncio.all_tasks(self._loop) if not task.done()]
        for task in tasks:
            task.cancel()
        if not tasks:
            self._idle.set()
            return

        def one_done(_task: asyncio.Task[Any]) -> None:
            if all(task.done() for task in tasks):
                self._idle.set()

        for task in tasks:
            task.add_done_callback(one_done)

    # -- either side -----------------------------------------------------------------------

    def _done(self, run: _Run, outcome: Outcome) -> None:
        self._outbox.append((run, outcome))
        if not self._woken:
            # One wake-up per collect() is enough: it takes every outcome there is.
            self._woken = True
            os.write(self._wake_w, b"x")

    def _run_sync(self, run: _Run) -> None:
        """A plain ``def`` task, in a thread of the pool's own."""
        try:
            with self._lock:
                if run.soft_due:
                    outcome = Outcome.failure(
                        run.job,
                        SoftTimeLimitExceeded(
                            f"soft time limit ({run.soft:g} s) exceeded waiting for a thread"
                        ),
                    )
                    self._done(run, outcome)
                    return
                run.thread = threading.get_ident()
            try:
                outcome = execute(self.app, run.job, self.hostname)
            finally:
                with self._lock:
                    run.thread = None
        except SoftTimeLimitExceeded as exc:  # raised between the task and its outcome
            outcome = Outcome.failure(run.job, exc)
        self._done(run, outcome)


__all__ = ["AsyncioPool"]
