"""Jobs held ahead for a pool's free slots to come (prefork's ``worker_prefork_ahead``).

A job held ahead is marked STARTED before a slot is free for it, so that a child finishing
a job starts the next without waiting for the round trip that marks it: the worker refills
the places held ahead with a trip that goes anyway (outcomes, a claim), or on its own once
none is left. Only jobs whose mark changes nothing if they never run are held: acks_late
ones (a lost worker's rescue runs them again; an at-most-once job would end FAILURE) with
no expiry (which mark_started checks by the database's clock when a slot frees). A warm
shutdown gives the held jobs back to the queue.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .execution import Job
    from .policy import JobPolicy
    from .pool import Pool


def may_hold(policy: JobPolicy, job: Job) -> bool:
    """Whether ``job`` may be marked STARTED before a slot is free for it."""
    return job.expires_at is None and policy.acks_late(job)


def refill_due(pool: Pool, buffer: deque[Job], policy: JobPolicy) -> bool:
    """Whether to refill now: the pool has room to hold jobs and holds none, so the next
    slot to free would wait for a round trip, and the next buffered job may be held."""
    return (
        pool.queue_room() > 0 and not pool.queued() and bool(buffer) and may_hold(policy, buffer[0])
    )


def take(pool: Pool, buffer: deque[Job], policy: JobPolicy) -> list[Job]:
    """Buffered jobs to mark STARTED for the pool to hold, in claim order, as many as it has
    room for, stopping at the first that may not be held."""
    taken: list[Job] = []
    while len(taken) < pool.queue_room() and buffer and may_hold(policy, buffer[0]):
        taken.append(buffer.popleft())
    return taken
