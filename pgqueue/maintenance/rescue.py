"""Rescue: jobs held by lost workers go back to the queue (or end FAILURE when
at-most-once). A worker is lost when its heartbeat is stale, or when its liveness lock has
been gone longer than its reconnect grace (see rescue_jobs in sql/queries.sql)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .. import queries
from .service import Connection, Service

if TYPE_CHECKING:
    from ..app import PgQueue

log = logging.getLogger("pgqueue.maintenance")


class Rescuer(Service):
    name = "rescue"

    def __init__(self, app: PgQueue) -> None:
        super().__init__(float(app.conf.worker_rescue_interval))
        self.app = app

    def work(self, conn: Connection) -> bool:
        row = conn.execute(
            queries.get("rescue_jobs"),
            {
                "lost_timeout": float(self.app.conf.worker_lost_timeout),
                "keep_for": self.app.conf.result_expires_seconds(),
            },
        ).fetchone()
        assert row is not None
        lost, requeued, failed, _, missing = row
        if missing:
            log.warning(
                "%d worker(s) lost their connection to Postgres; their jobs are rescued "
                "unless they reconnect within their worker_reconnect_grace",
                missing,
            )
        if lost or requeued or failed:
            log.warning(
                "rescued jobs of %d lost worker(s): %d back in the queue, %d failed (at-most-once)",
                lost,
                requeued,
                failed,
            )
        return False
