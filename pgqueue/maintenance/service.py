"""What every maintenance service is: a named piece of housekeeping with an interval, and one
pass of work. Its name is its row in pgqueue.maintenance, which elects the one process doing
each pass (see runner.py)."""

from __future__ import annotations

from typing import Any

import psycopg

Connection = psycopg.Connection[Any]


class Service:
    """One housekeeping service. Subclasses set ``name`` and ``work``."""

    # Its row in pgqueue.maintenance: one process at a time does each service, while the
    # services themselves may run in different processes side by side.
    name = "service"
    # VACUUM cannot run in a transaction: such a service commits its election at once and
    # keeps others off with its server process's id (running_pid), not a row lock.
    transactional = True

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next_run = 0.0  # monotonic; 0 runs it on the first pass

    def work(self, conn: Connection) -> bool:
        """Do one pass. True when it stopped at a full batch and should run again at once."""
        raise NotImplementedError
