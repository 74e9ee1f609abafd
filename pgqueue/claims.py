"""The claim side of the worker: when to claim, the round trip that marks buffered jobs
STARTED and claims more (STARTED at once for the free slots), and the buffer of jobs
claimed for us but not started yet.

A claim is sent when there may be ready jobs: at start-up, after a full batch (more may be
waiting), on a NOTIFY for one of our queues, when the earliest future job falls due, and
once per poll interval as a fallback for a lost notification.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from . import queries, states
from .db import translate_errors
from .execution import FIELDS, Job, Outcome, decode_failure
from .handoff import HandoffSlots

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .lease import Registration
    from .policy import JobPolicy
    from .task import Task

log = logging.getLogger("pgqueue.worker")


@dataclass
class ClaimTrip:
    """Cursors of a claim round trip, read once its reply is in."""

    to_start: list[Job]
    started: Any = None  # mark_started's: (id, still due) of the jobs that are still ours
    claimed: Any = None  # claim_jobs': the claimed jobs' JSON document
    due: Any = None  # next_run_delay's
    limited: Any = None  # claim_limited_jobs': a document of STARTED jobs, when to look again
    free: int = 0  # the free slots the claims may start jobs in


class Claims:
    """One worker's claims and its buffer of claimed jobs not started yet."""

    def __init__(
        self,
        worker: Registration,
        *,
        capacity: int,
        poll_interval: float,
        policy: JobPolicy,
        failed: Callable[[Outcome], None],
    ) -> None:
        self.worker_id = worker.id
        self.queues = worker.queues
        self.unlimited = worker.unlimited_tasks
        self.limited = frozenset(worker.limited)
        self.limited_names = sorted(self.limited)
        self.limits = worker.limits
        # a job of a limited task finished here: claim once more after its outcome is written
        self.recheck = False
        # whether one of our queues has limits (next_run_delay says, at every claim)
        self.queue_limits = False
        self.at_most_once = worker.at_most_once
        # What an at-most-once job's claim or STARTED mark commits with (claim_settings).
        self.durable = {"synchronous_commit": worker.synchronous_commit}
        self.capacity = capacity
        self.poll_interval = poll_interval
        self.policy = policy
        self._failed = failed  # where the outcome of a job that ends here goes
        self.buffer: collections.deque[Job] = collections.deque()
        self.wanted = True  # at start-up, and whenever there may be more ready jobs
        self.next_due: float | None = None  # monotonic time of the earliest future job
        self.last_poll = time.monotonic()
        # When the earliest job not yet due becomes due (monotonic), as of the last claim;
        # run_at is on the database's clock, so the database says how far off that is.
        self.due_after_claim: float | None = None

    # -- when to claim ---------------------------------------------------------------------------

    def room(self, busy: int, starting: int) -> int:
        """How many jobs to claim now: claims come in batches, once half the capacity is
        free, unless nothing is buffered or running. (The loop also sleeps on this: waking up
        for a claim it would not make would spin.)"""
        busy += len(self.buffer) + starting
        room = self.capacity - busy
        if room < self.capacity // 2 and busy:
            return 0
        return room

    def due_now(self) -> bool:
        return self.wanted or (self.next_due is not None and time.monotonic() >= self.next_due)

    def next_attention(self, busy: int, *, may_claim: bool = True) -> float:
        """When the claim side next needs the loop (monotonic): now if a claim is wanted,
        may be sent and there is room for it; else the next due job or the fallback poll."""
        if may_claim and self.wanted and self.room(busy, 0) > 0:
            return time.monotonic()
        times = [self.last_poll + self.poll_interval]
        if self.next_due is not None:
            times.append(self.next_due)
        return min(times)

    def heard(self, work: bool) -> None:
        """After the loop woke: a NOTIFY for our queues, or the poll interval passed."""
        if work:
            self.wanted = True
        if time.monotonic() - self.last_poll >= self.poll_interval:
            # The fallback poll asks for one claim; it is not due again for a whole
            # interval, even if the pool is too busy to claim now (else the loop's timeout
            # would stay at zero and the loop spin until a slot frees).
            self.wanted = True
            self.last_poll = time.monotonic()

    def claimed(self, jobs: list[Job], room: int) -> None:
        """After a claim for ``room`` jobs brought ``jobs``."""
        self.last_poll = time.monotonic()
        # A full batch means more may be waiting; a short one means the ready jobs are
        # drained and a NOTIFY (or a due run_at) tells of more. After a limited task's job
        # finished here, once more: this claim may have run before its outcome was written.
        self.wanted = len(jobs) == room or self.recheck
        self.recheck = False
        self.next_due = None if self.wanted else self.due_after_claim

    def finished(self, task_name: str) -> None:
        """A job of ``task_name`` finished in our pool: if its task is limited, a job held
        back by that limit may start now."""
        if task_name in self.limited:
            self.wanted = self.recheck = True

    # -- the buffer ------------------------------------------------------------------------------

    def startable(self, free: int) -> list[Job]:
        """Take from the buffer as many jobs as there are ``free`` slots; those the claim
        found expired end REVOKED instead (mark_started catches any that expired since)."""
        starting: list[Job] = []
        while self.buffer and len(starting) < free:
            job = self.buffer.popleft()
            if job.expired:
                self.end_expired(job)
            else:
                starting.append(job)
        return starting

    def end_expired(self, job: Job) -> None:
        log.info("task %s expired before it started: REVOKED", job.label)
        self._failed(
            Outcome.for_job(
                job,
                states.REVOKED,
                exc_type="pgqueue.exceptions.TaskRevokedError",
                exc_message="expired",
            )
        )

    def holds(self, job_id: str) -> bool:
        return any(j.id == job_id for j in self.buffer)

    def drop(self, job_ids: set[str]) -> None:
        """Drop buffered jobs the database shows revoked."""
        for job in [j for j in self.buffer if j.id in job_ids]:
            self.buffer.remove(job)
            log.info("job %s revoked before it started", job.id)

    # -- the round trip --------------------------------------------------------------------------

    def send(
        self,
        conn: psycopg.Connection[Any],
        to_start: list[Job],
        claim: int,
        start: int,
        handoff: HandoffSlots,
    ) -> ClaimTrip:
        """Send, on ``conn`` in one pipeline (one transaction): mark ``to_start`` STARTED,
        claim up to ``claim`` more, the first ``start`` of them STARTED at once."""
        trip = ClaimTrip(to_start, free=start)
        with conn.pipeline():
            conn.execute(queries.get("claim_settings"), self.durable)
            handoff.withdraw(conn)
            if to_start:
                trip.started = conn.execute(
                    queries.get("mark_started"), self._start_params(to_start)
                )
            if claim > 0 and start > 0 and (self.limited or self.queue_limits):
                # Before claim_jobs, to which it leaves the slots it did not fill.
                trip.limited = conn.execute(
                    queries.get("claim_limited_jobs"), self._limited_params(start)
                )
            if claim > 0:
                trip.claimed = conn.execute(
                    queries.get("claim_jobs"), self._claim_params(claim, start)
                )
                # Needed only when the claim comes up short, to sleep until the next job is
                # due; asked now, it costs no round trip of its own. (Same transaction: the
                # jobs just claimed no longer count.)
                # (Limited tasks only with jobs not yet due: their ready jobs held back by a
                # limit would make it "due now"; claim_limited says when to look again.)
                trip.due = conn.execute(
                    queries.get("next_run_delay"),
                    {"queues": self.queues, "tasks": self.unlimited, "limited": self.limited_names},
                )
        return trip

    def refused(self, to_start: list[Job]) -> None:
        """The claim's transaction rolled back whole: the jobs to start are still ours,
        claimed and not STARTED; they go back to the front of the buffer."""
        self.buffer.extendleft(reversed(to_start))

    def still_ours(self, trip: ClaimTrip) -> dict[str, bool]:
        """Of the jobs marked STARTED, those still ours, and whether each is still due."""
        return {r[0]: r[1] for r in trip.started.fetchall()} if trip.started is not None else {}

    def received(self, conn: psycopg.Connection[Any], trip: ClaimTrip) -> list[Job]:
        """The jobs claimed; those not STARTED already go to the buffer."""
        assert trip.due is not None  # sent with every claim
        delay, queue_limits = trip.due.fetchone()
        if queue_limits and not self.queue_limits:
            self.recheck = True  # claim again, with claim_limited this time
        self.queue_limits = queue_limits
        limited: list[Job] = []
        if trip.limited is not None:
            document, retry_in = trip.limited.fetchone()
            limited = self.decode(conn, document)
            # the earlier of the next due job and a job held back by a limit
            delay = retry_in if delay is None else min(delay, retry_in or delay)
        self.due_after_claim = None if delay is None else time.monotonic() + max(0.0, delay)
        document, _ = trip.claimed.fetchone()
        jobs = self.decode(conn, document)
        # Both claims may start jobs in the free slots: those claim_jobs started past them
        # wait in the buffer, to be marked STARTED again when a slot frees (as a job handed
        # to a full pool is).
        free = trip.free - len(limited)
        for job in jobs:
            if job.started:
                job.started = free > 0
                free -= 1
        self.buffer.extend(job for job in jobs if not job.started)
        return limited + jobs

    def decode(self, conn: psycopg.Connection[Any], document: str) -> list[Job]:
        """The jobs of a claim's JSON document. A job that cannot be decoded (a row written
        by hand) ends FAILURE with DecodeError; the others go on as usual.

        The document is parsed whole, as fast as can be; only if that fails does the
        database split it, so that each job is decoded alone.
        """
        try:
            return [Job.from_claim(row) for row in json.loads(document)]
        except (ValueError, TypeError, RecursionError, OverflowError):
            pass
        with translate_errors():
            entries = conn.execute(
                queries.get("split_jobs_document"), {"document": document, "fields": list(FIELDS)}
            ).fetchall()
        jobs = []
        for job_id, attempt, task_name, queue, entry in entries:
            try:
                jobs.append(Job.from_claim(json.loads(entry)))
            except (ValueError, TypeError, RecursionError, OverflowError) as exc:
                outcome = decode_failure(job_id, attempt, task_name, queue, exc)
                log.error("task %s[%s]: %s", task_name, job_id, outcome.exc_message)
                self._failed(outcome)
        return jobs

    # -- giving jobs back ------------------------------------------------------------------------

    def release(self, conn: psycopg.Connection[Any], jobs: list[Job], why: str) -> None:
        """Put jobs claimed for us back in the queue (fenced by attempt: a job no longer
        ours is left alone)."""
        if not jobs:
            return
        with translate_errors():
            rows = conn.execute(
                queries.get("release_jobs"),
                {
                    "ids": [j.id for j in jobs],
                    "attempts": [j.attempt for j in jobs],
                    "worker_id": self.worker_id,
                },
            ).fetchall()
        log.info("put %d job(s) back in the queue (%s)", sum(r[1] for r in rows), why)

    def release_buffer(self, conn: psycopg.Connection[Any]) -> None:
        jobs = list(self.buffer)
        self.buffer.clear()
        self.release(conn, jobs, "unstarted")

    def release_held(self, conn: psycopg.Connection[Any], keep: list[tuple[str, int]]) -> None:
        """On a reconnect, give back what the lost connection may have claimed for us.

        The buffer is dropped whole: its jobs, and any claimed or marked STARTED in a
        round trip whose reply never came, go back to the queue; the jobs in ``keep``
        (running, or with an outcome still to be written) stay ours.
        """
        rows = conn.execute(
            queries.get("release_held_jobs"),
            {
                "worker_id": self.worker_id,
                "keep": [k[0] for k in keep],
                "keep_attempts": [k[1] for k in keep],
            },
        ).fetchall()
        self.buffer.clear()
        released = sum(r[1] for r in rows)
        if released:
            log.warning("put %d claimed but unstarted job(s) back in the queue", released)

    def _start_params(self, jobs: list[Job]) -> dict[str, Any]:
        return {
            "jobs": json.dumps([[j.id, j.attempt, self.policy.acks_late(j)] for j in jobs]),
            "worker_id": self.worker_id,
            **self.durable,
        }

    def _limited_params(self, room: int) -> dict[str, Any]:
        return {
            **self.durable,
            "worker_id": self.worker_id,
            "queues": self.queues,
            "tasks": self.unlimited,
            "limits": self.limits,
            "room": room,
            "at_most_once": self.at_most_once,
        }

    def _claim_params(self, limit: int, start: int) -> dict[str, Any]:
        return {
            **self.durable,
            "queues": self.queues,
            "tasks": self.unlimited,
            "limit": limit,
            "start": max(0, start),
            "at_most_once": self.at_most_once,
            "worker_id": self.worker_id,
        }


def limited_tasks(tasks: Mapping[str, Task]) -> tuple[list[str], str]:
    """The names of the tasks with a concurrency or rate limit, and their description for
    pgqueue.claim_limited (JSON)."""
    limited = sorted(name for name, task in tasks.items() if task.controls.limited)
    return limited, json.dumps([tasks[name].controls.limit_spec(name) for name in limited])
