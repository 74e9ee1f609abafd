"""The outcome writer: holds the outcomes the pool reports until a round trip writes them,
writes them in batches fenced by (job id, attempt) and worker, and logs one line each.

An outcome is cleared only once written: after a lost connection the same outcomes are
written again, and the fence makes that idempotent; an outcome whose job is no longer ours
(revoked, or rescued after this worker was taken for lost) is discarded, and said so.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from . import logs, queries, states
from .execution import Outcome
from .lease import SHUTDOWN_OUTAGE_LIMIT

if TYPE_CHECKING:
    from .app import PgQueue
    from .metrics import Metrics

log = logging.getLogger("pgqueue.worker")

# How long an outcome may wait to be written with others while the pool is busy (seconds).
OUTCOME_LINGER = 0.010


@dataclass
class Sent:
    """Outcomes sent in a round trip whose reply has not been read yet."""

    outcomes: list[Outcome]
    finished: Any  # finish_jobs' cursor (the ids it wrote), or None


class OutcomeWriter:
    """The outcomes of one worker, from the pool to the database."""

    def __init__(self, app: PgQueue, worker_id: str, worker_name: str) -> None:
        self.app = app
        self.worker_id = worker_id
        self.worker_name = worker_name
        self.held: list[Outcome] = []
        self.jobs_done = 0
        self.metrics: Metrics | None = None
        # monotonic time the oldest outcome still to be written came in
        self._since = 0.0

    def add(self, outcome: Outcome) -> None:
        """Hold an outcome until the next round trip writes it (see due)."""
        if not self.held:
            self._since = time.monotonic()
        self.held.append(outcome)

    def due(self, *, at_once: bool) -> bool:
        """Whether to write the outcomes in hand even though no claim goes with them: at
        once when the pool is idle or the worker stops (``at_once``); while other jobs run,
        once the oldest has waited OUTCOME_LINGER, so that the outcomes of a busy pool go out
        in a few big statements, most of them with the next claim, not one round trip each."""
        if not self.held:
            return False
        return at_once or time.monotonic() - self._since >= OUTCOME_LINGER

    def next_attention(self) -> float | None:
        """When the held outcomes are due at the latest (monotonic), None if none are held."""
        return self._since + OUTCOME_LINGER if self.held else None

    def holding_at_shutdown(self, stopping_since: float) -> bool:
        """Whether a warm shutdown waits on, for outcomes statement errors kept unwritten:
        at most SHUTDOWN_OUTAGE_LIMIT seconds, then the jobs are left to be rescued."""
        if not self.held:
            return False
        if time.monotonic() - stopping_since < SHUTDOWN_OUTAGE_LIMIT:
            return True
        log.error(
            "%d outcome(s) still refused by the database %.0f s into a warm shutdown; "
            "exiting, their jobs will be rescued",
            len(self.held),
            SHUTDOWN_OUTAGE_LIMIT,
        )
        return False

    # -- writing -------------------------------------------------------------------------------

    def send(self, conn: psycopg.Connection[Any]) -> Sent | None:
        """Send the held outcomes on ``conn`` (in its pipeline, if the caller opened one);
        ``settle`` reads the reply."""
        if not self.held:
            return None
        outcomes = self.held
        finished = [o for o in outcomes if o.state != states.RETRY]
        retried = [o for o in outcomes if o.state == states.RETRY]
        done = None
        if finished:
            done = conn.execute(queries.get("finish_jobs"), self._finish_params(finished))
        if retried:
            conn.execute(queries.get("retry_jobs"), self._retry_params(retried))
        return Sent(outcomes, done)

    def settle(self, sent: Sent | None, failed: bool) -> None:
        """After the round trip: forget and log what was written, keep everything held when
        the server refused the statements (``failed``: nothing of them committed)."""
        if sent is None or failed:
            return
        self.held = self.held[len(sent.outcomes) :]
        written = {r[0] for r in sent.finished.fetchall()} if sent.finished is not None else set()
        for o in sent.outcomes:
            self._log(o, o.state == states.RETRY or o.job_id in written)
        self.jobs_done += len(sent.outcomes)

    def write(self, conn: psycopg.Connection[Any]) -> None:
        """Write the held outcomes now, in one round trip of their own."""
        with conn.pipeline():
            sent = self.send(conn)
        self.settle(sent, failed=False)

    def _finish_params(self, outcomes: list[Outcome]) -> dict[str, Any]:
        return {
            "outcomes": json.dumps([o.finish_row() for o in outcomes]),
            "worker_id": self.worker_id,
            "worker_name": self.worker_name,
            "result_expires": self.app.conf.result_expires_seconds(),
        }

    def _retry_params(self, outcomes: list[Outcome]) -> dict[str, Any]:
        return {
            "ids": [o.job_id for o in outcomes],
            "attempts": [o.attempt for o in outcomes],
            "countdowns": [o.countdown for o in outcomes],
            "etas": [o.eta for o in outcomes],
            "exc_types": [o.exc_type for o in outcomes],
            "exc_messages": [o.exc_message for o in outcomes],
            "tracebacks": [o.traceback for o in outcomes],
            "increments": [0 if o.extra.get("requeue") else 1 for o in outcomes],
            "args": [o.args_json for o in outcomes],
            "kwargs": [o.kwargs_json for o in outcomes],
            "worker_id": self.worker_id,
        }

    # -- logging -------------------------------------------------------------------------------

    def _log(self, o: Outcome, written: bool) -> None:
        # One line per finished job: task name, id, state, duration (and the error).
        if self.metrics is not None:
            self.metrics.job_finished(o)
        if written and o.state == states.SUCCESS and not log.isEnabledFor(logging.INFO):
            return  # the common case at --loglevel WARNING: no line, so nothing to format
        label = f"{o.task_name}[{o.job_id}] (queue {o.queue})"
        extra = logs.job_fields(
            o.task_name,
            o.job_id,
            o.queue,
            event="task_finished",
            outcome=o.state,
            runtime=round(o.time_taken, 6),
            written=written,
        )
        if not written:
            log.warning(
                "task %s: outcome %s discarded: the job is no longer ours (revoked, or "
                "rescued after this worker was taken for lost)",
                label,
                o.state,
                extra=extra,
            )
        elif o.state == states.SUCCESS:
            log.info("task %s SUCCESS in %.3fs", label, o.time_taken, extra=extra)
        elif o.state == states.FAILURE:
            log.error(
                "task %s FAILURE in %.3fs: %s: %s",
                label,
                o.time_taken,
                o.exc_type,
                o.exc_message,
                extra={**extra, "exc_type": o.exc_type, "exc_message": o.exc_message},
            )
        else:
            log.info(
                "task %s %s in %.3fs: %s",
                label,
                o.state,
                o.time_taken,
                o.exc_message or "",
                extra=extra,
            )
