"""Vacuum: where the server's autovacuum is off, the jobs table is vacuumed every minute.

A queue table turns its rows over constantly; without vacuum its dead rows and index entries
pile up and every claim wades through them."""

from __future__ import annotations

import logging

import psycopg.errors

from .. import queries
from .service import Connection, Service

log = logging.getLogger("pgqueue.maintenance")

VACUUM_INTERVAL = 60.0


class Vacuumer(Service):
    name = "vacuum"
    transactional = False

    def __init__(self, interval: float = VACUUM_INTERVAL) -> None:
        super().__init__(interval)
        # Whether this server needs us to vacuum, and whether our role may: asked once.
        self._needed: bool | None = None

    def work(self, conn: Connection) -> bool:
        if self._needed is None:
            row = conn.execute(queries.get("autovacuum_setting")).fetchone()
            assert row is not None
            setting, may_vacuum = row
            self._needed = setting == "off" and may_vacuum
            if self._needed:
                log.info("autovacuum is off on this server: workers vacuum pgqueue.jobs")
            elif setting == "off":
                log.warning(
                    "autovacuum is off on this server, and only the owner of pgqueue.jobs may "
                    "vacuum it (not this worker's role): schedule VACUUM pgqueue.jobs as its owner"
                )
        if self._needed:
            try:
                # SKIP_LOCKED as well as the election: a VACUUM the DBA started is not waited on.
                conn.execute(queries.get("vacuum_jobs"))
            except psycopg.errors.InsufficientPrivilege as exc:
                log.warning("cannot vacuum pgqueue.jobs (%s); leaving it to the DBA", exc)
                self._needed = False
        return False
