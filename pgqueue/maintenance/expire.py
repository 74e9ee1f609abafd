"""Expiry: unclaimed jobs past their expiry end REVOKED, whatever their task (the claim
only sees the tasks of the workers running, so it alone would leave the others waiting)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .. import queries
from .service import Connection, Service

if TYPE_CHECKING:
    from ..app import PgQueue

log = logging.getLogger("pgqueue.maintenance")

BATCH = 5000


class Expirer(Service):
    name = "expire"

    def __init__(self, app: PgQueue) -> None:
        super().__init__(float(app.conf.worker_rescue_interval))
        self.app = app

    def work(self, conn: Connection) -> bool:
        row = conn.execute(
            queries.get("expire_jobs"),
            {"limit": BATCH, "keep_for": self.app.conf.result_expires_seconds()},
        ).fetchone()
        assert row is not None
        (count,) = row
        if count:
            log.info("revoked %d expired job(s)", count)
        return bool(count == BATCH)
