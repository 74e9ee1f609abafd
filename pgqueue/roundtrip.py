"""The worker's round trip: the held outcomes written on the writer connection and, side by
side on the claiming connection, buffered jobs marked STARTED and more claimed, in one
exchange with the server."""

from __future__ import annotations

import contextlib
import logging

import psycopg

from . import queries
from .claims import Claims, ClaimTrip
from .db import connection_lost, translate_errors
from .execution import Job
from .handoff import HandoffSlots
from .lease import Lease, StatementErrors
from .outcomes import OutcomeWriter

log = logging.getLogger("pgqueue.worker")


class RoundTrip:
    """Sends one worker's round trips and sorts out their replies."""

    def __init__(
        self,
        lease: Lease,
        claims: Claims,
        outcomes: OutcomeWriter,
        handoff: HandoffSlots,
        errors: StatementErrors,
    ) -> None:
        self.lease = lease
        self.claims = claims
        self.outcomes = outcomes
        self.handoff = handoff
        self.errors = errors

    def run(self, to_start: list[Job], claim: int, start: int = 0) -> tuple[list[Job], list[Job]]:
        """Write the outcomes, mark ``to_start`` STARTED, claim up to ``claim`` more, the
        first ``start`` of them STARTED at once. Returns the jobs claimed, and the jobs to
        hand to the pool now (marked STARTED and still ours, in order).

        The outcomes go out on the writer connection and the rest on ``conn``, each in
        pipeline mode (one implicit transaction, one commit per connection), and the worker
        waits for both replies together: the server runs the two at once. A job revoked
        since its claim is not returned by mark_started and is dropped instead of run.
        A statement the server refuses is noted in ``errors``; a lost connection raises.
        """
        conn, writer = self.lease.conn, self.lease.writer
        sent = None
        trip: ClaimTrip | None = None
        offered = self.handoff.offered
        writer_error: Exception | None = None
        conn_error: Exception | None = None
        with translate_errors():
            try:
                with contextlib.ExitStack() as writer_sent:
                    if self.outcomes.held:
                        # Sent now; its reply is awaited when the block ends, after conn's.
                        writer_sent.enter_context(writer.pipeline())
                        if self.lease.writer_pooled:
                            writer.execute(
                                queries.get("outcome_settings"),
                                {"synchronous_commit": self.lease.registration.synchronous_commit},
                            )
                        sent = self.outcomes.send(writer)
                    if to_start or claim > 0:
                        try:
                            trip = self.claims.send(conn, to_start, claim, start, self.handoff)
                        except psycopg.Error as exc:
                            if connection_lost(exc):
                                raise
                            conn_error = exc
            except psycopg.Error as exc:
                if connection_lost(exc):
                    raise
                writer_error = exc
        if conn_error is not None:
            # The claim's transaction rolled back whole: the slots we offered are as they
            # were, and the jobs to start go back to the buffer.
            self.claims.refused(to_start)
            self.handoff.restore(offered)
            trip = None
        self.errors.noted(writer_error or conn_error)
        # On a writer error nothing of finish_jobs/retry_jobs committed: the outcomes stay
        # held, for the next round trip.
        self.outcomes.settle(sent, failed=writer_error is not None)
        if trip is None:
            return [], []
        ours = self.claims.still_ours(trip)
        to_run = []
        for job in to_start:
            if job.id not in ours:
                log.info("task %s was revoked or rescued before it started; skipped", job.label)
            elif not ours[job.id]:
                self.claims.end_expired(job)
            else:
                to_run.append(job)
        if trip.claimed is None:
            return [], to_run
        claimed = self.claims.received(conn, trip)
        return claimed, to_run + [job for job in claimed if job.started]
