"""The pool interface: what the worker needs from wherever jobs run (pools.py names the
kinds, prefork.py holds the one with child processes)."""

from __future__ import annotations

import ctypes
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .exceptions import SoftTimeLimitExceeded
from .execution import Job, Outcome, execute

if TYPE_CHECKING:
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


def raise_in_thread(ident: int, error: type[BaseException]) -> None:
    """Raise ``error`` in the thread ``ident`` at its next Python instruction (a blocking C
    call such as a long ``time.sleep`` is interrupted only when it returns)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(error))


@dataclass
class Slot:
    """A job running in a pool, with its deadlines on the monotonic clock."""

    job: Job
    started: float
    soft_deadline: float | None
    hard_deadline: float | None
    warned: bool = False


def deadlines(
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
    terminates = "terminated its process"  # what terminate() did, for the log

    def __init__(self, app: PgQueue, concurrency: int, hostname: str) -> None:
        self.app = app
        self.concurrency = concurrency
        self.hostname = hostname

    @classmethod
    def create(cls, app: PgQueue, concurrency: int, hostname: str, **limits: int | None) -> Pool:
        """A pool of this kind; ``limits`` (max_tasks_per_child, max_memory_per_child,
        ahead) go only to a pool that has_children."""
        factory: Callable[..., Pool] = cls
        return factory(app, concurrency, hostname, **(limits if cls.has_children else {}))

    def start(self) -> None:
        """Create the workers of the pool."""

    def free_slots(self) -> int:
        raise NotImplementedError

    def queue_room(self) -> int:
        """How many more STARTED jobs the pool would hold, beyond its free slots, to start
        the moment a slot frees (prefork's ``ahead``); 0 for a pool that holds none."""
        return 0

    def queued(self) -> int:
        """How many such jobs it holds now."""
        return 0

    def take_queued(self) -> list[Job]:
        """Give up the jobs held for a slot to free (a warm shutdown puts them back)."""
        return []

    def running(self) -> list[Slot]:
        """The jobs in the pool: running, and waiting in it for a slot (see queue_room)."""
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
