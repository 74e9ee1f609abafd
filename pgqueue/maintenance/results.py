"""Result cleanup: results past ``result_expires`` are deleted, a bounded batch at a time
so that no pass holds locks on many rows for long."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .. import queries
from .service import LOCK_BASE, Connection, Service

if TYPE_CHECKING:
    from ..app import PgQueue

log = logging.getLogger("pgqueue.maintenance")

BATCH = 5000


class ResultCleaner(Service):
    name = "results"
    lock_key = LOCK_BASE + 2

    def __init__(self, app: PgQueue) -> None:
        super().__init__(float(app.conf.result_cleanup_interval))

    def work(self, conn: Connection) -> bool:
        deleted = conn.execute(queries.get("delete_expired_results"), {"limit": BATCH}).rowcount
        if deleted:
            log.info("deleted %d expired result(s)", deleted)
        return deleted == BATCH
