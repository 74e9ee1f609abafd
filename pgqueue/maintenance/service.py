"""What every maintenance service is: a named piece of housekeeping with an interval, an
advisory lock key that elects the one process doing it, and one pass of work."""

from __future__ import annotations

from typing import Any

import psycopg

from ..locks import MAINTENANCE_LOCK_BASE

# Every service has its own advisory lock key, so that one process at a time does each
# service while the services themselves may run in different processes side by side.
LOCK_BASE = MAINTENANCE_LOCK_BASE

Connection = psycopg.Connection[Any]


class Service:
    """One housekeeping service. Subclasses set ``name``, ``lock_key`` and ``work``."""

    name = "service"
    lock_key = LOCK_BASE
    # VACUUM cannot run in a transaction: such a service is elected with a session lock.
    transactional = True

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next_run = 0.0  # monotonic; 0 runs it on the first pass

    def work(self, conn: Connection) -> bool:
        """Do one pass. True when it stopped at a full batch and should run again at once."""
        raise NotImplementedError
