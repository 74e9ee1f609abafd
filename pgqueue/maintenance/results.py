"""Result cleanup: results past ``result_expires`` are deleted, a bounded batch at a time
so that no pass holds locks on many rows for long; so are the rows of workflows (chains,
groups, chords) as old, once nothing of them is live."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .. import queries
from .service import Connection, Service

if TYPE_CHECKING:
    from ..app import PgQueue

log = logging.getLogger("pgqueue.maintenance")

BATCH = 5000


class ResultCleaner(Service):
    name = "results"

    def __init__(self, app: PgQueue) -> None:
        super().__init__(float(app.conf.result_cleanup_interval))
        self.app = app

    def work(self, conn: Connection) -> bool:
        deleted = conn.execute(queries.get("delete_expired_results"), {"limit": BATCH}).rowcount
        if deleted:
            log.info("deleted %d expired result(s)", deleted)
        keep_for = self.app.conf.result_expires_seconds()
        flows = 0
        if keep_for is not None:
            flows = conn.execute(
                queries.get("delete_finished_workflows"), {"keep_for": keep_for, "limit": BATCH}
            ).rowcount
            if flows:
                log.info("deleted %d finished workflow(s)", flows)
        return deleted == BATCH or flows == BATCH
