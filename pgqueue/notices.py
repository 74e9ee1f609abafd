"""What the worker hears on its listening connection, and what it believes of it.

Every notification is a hint from anyone (any role may NOTIFY any channel): a pgqueue_jobs
one only leads to a claim, which the database decides; a hand-off runs only when signed by
the jobs trigger (pgqueue.handoff); a revoke is acted on only once the database confirms it
(``confirmed_revokes``). What fails those checks is counted and logged, rate-limited.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

from . import queries
from .claims import Claims
from .db import JOBS_CHANNEL, translate_errors
from .exceptions import DatabaseUnavailable
from .execution import Job
from .handoff import HandoffSlots, handed_job
from .lease import Lease
from .outcomes import OutcomeWriter
from .pool import Pool

log = logging.getLogger("pgqueue.worker")

CONTROL_CHANNEL = "pgqueue_control"
# At most one warning per this many seconds about notifications pgqueue did not send.
FORGED_LOG_INTERVAL = 60.0


class ForgedLog:
    """Says that someone sent us notifications pgqueue did not, without letting a flood of
    them flood the log."""

    def __init__(self) -> None:
        self._count = 0
        self._logged = 0.0

    def __call__(self, what: str, payload: str) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._logged >= FORGED_LOG_INTERVAL:
            log.warning(
                "ignored %d %s notification(s) not sent by pgqueue (a role able to connect "
                "sent them with NOTIFY; check who: pg_stat_activity), latest: %r",
                self._count,
                what,
                payload[:120],
            )
            self._count, self._logged = 0, now


def collect_revoke(
    payload: str, worker_id: str, revokes: dict[str, bool], forged: ForgedLog
) -> None:
    """Add the revoke in a control notification addressed to us to ``revokes`` (job id ->
    terminate); one for another worker is ignored, a malformed one counted as forged."""
    try:
        message = json.loads(payload)
        if not isinstance(message, dict) or message.get("worker") != worker_id:
            return
        job_id = str(uuid.UUID(str(message["revoke"])))
    except (ValueError, TypeError, KeyError):
        forged("control", payload)
        return
    revokes[job_id] = revokes.get(job_id, False) or message.get("terminate") is True


def confirmed_revokes(
    conn: psycopg.Connection[Any], worker_id: str, asked: list[str], forged: ForgedLog
) -> set[str]:
    """Of the jobs we were told are revoked, those the database shows revoked; the others
    are counted as forged."""
    with translate_errors():
        rows = conn.execute(
            queries.get("confirm_revoked"), {"ids": asked, "worker_id": worker_id}
        ).fetchall()
    confirmed = {r[0] for r in rows}
    for job_id in asked:
        if job_id not in confirmed:
            forged("revoke", job_id)
    return confirmed


class Inbox:
    """What one worker does with the notifications its listener hears: a NOTIFY for its
    queues asks for a claim, a signed hand-off starts a job, a confirmed revoke drops or
    stops one."""

    def __init__(
        self,
        worker_id: str,
        queues: list[str],
        lease: Lease,
        handoff: HandoffSlots,
        claims: Claims,
        outcomes: OutcomeWriter,
    ) -> None:
        self.worker_id = worker_id
        self.queues = queues
        self.lease = lease
        self.handoff = handoff
        self.claims = claims
        self.outcomes = outcomes
        self.forged = ForgedLog()

    def listen(self, listener: psycopg.Connection[Any]) -> None:
        """LISTEN on a (new) listening session: new jobs, control messages, hand-offs."""
        listener.execute(queries.get("worker_listen_jobs"))
        listener.execute(queries.get("worker_listen_control"))
        self.handoff.listen(listener)

    def hear(self, pool: Pool, start: Callable[[Job], None], stopping: bool) -> bool:
        """Handle what woke us; True if new work may be ready in our queues."""
        listener = self.lease.listener
        with translate_errors():
            notes = list(listener.notifies(timeout=0))
        if not notes and listener.closed:
            raise DatabaseUnavailable("the listening connection closed")
        work = False
        revokes: dict[str, bool] = {}
        for note in notes:
            if note.channel == JOBS_CHANNEL:
                work = work or note.payload in self.queues
            elif note.channel == self.handoff.channel:
                self._on_handoff(note.payload, pool, start, stopping)
            elif note.channel == CONTROL_CHANNEL:
                collect_revoke(note.payload, self.worker_id, revokes, self.forged)
        if revokes:
            self._on_revokes(revokes, pool)
        return work

    def _on_revokes(self, revokes: dict[str, bool], pool: Pool) -> None:
        """Drop buffered jobs, and terminate running ones when asked to, of those the
        database shows revoked; a forged revoke touches nothing."""
        running = {slot.job.id for slot in pool.running()}
        asked = [job_id for job_id in revokes if job_id in running or self.claims.holds(job_id)]
        if not asked:
            return
        confirmed = confirmed_revokes(self.lease.conn, self.worker_id, asked, self.forged)
        self.claims.drop(confirmed)
        for job_id in confirmed:
            if not revokes[job_id] or job_id not in running:
                continue
            if pool.terminate(job_id):
                log.warning("job %s revoked: %s", job_id, pool.terminates)
            else:
                log.warning(
                    "job %s revoked with terminate, but the %s pool cannot stop a running "
                    "task; it runs to the end and its outcome is discarded",
                    job_id,
                    pool.name,
                )

    def _on_handoff(
        self, payload: str, pool: Pool, start: Callable[[Job], None], stopping: bool
    ) -> None:
        """A producer handed us a job, already claimed and STARTED for us: run it now, or
        buffer it if a claim filled the slot meanwhile (it is marked STARTED again then).
        One signed with a retired key (we reconnected since) is given back instead."""
        handoff = self.handoff.keys.verify(payload)
        if handoff is None:
            self.forged("hand-off", payload)
            return
        conn, claims = self.lease.conn, self.claims
        job = handed_job(handoff, conn, lambda doc: claims.decode(conn, doc))
        if job is None:  # it could not be decoded, and ends FAILURE
            if handoff.current:
                self.handoff.taken()
            return
        if not handoff.current:
            claims.release(conn, [job], "handed to this worker before it reconnected")
            return
        self.handoff.taken()
        if stopping or not pool.free_slots():
            claims.buffer.append(job)
        else:
            start(job)
