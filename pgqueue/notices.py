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
from typing import Any

from . import queries
from .db import translate_errors

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


def confirmed_revokes(conn: Any, worker_id: str, asked: list[str], forged: ForgedLog) -> set[str]:
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
