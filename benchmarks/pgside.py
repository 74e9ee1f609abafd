"""What a run costs, seen from the machine: CPU per process group, Postgres's waits and WAL.

A ``Sampler`` thread looks every ``interval`` seconds at: the CPU time (from /proc) of the
backends connected to one database, of the worker processes and of the forwarders; what
those backends wait on (``pg_stat_activity.wait_event_type``), and how many lock requests
are not granted (``pg_locks``); the WAL position; the machine's busy time (/proc/stat).
``window(start, end)`` then gives what happened between two moments (epoch seconds), such
as a drain's first and last completion.

WAL and machine CPU are the whole server's and the whole machine's: they include anyone
else using them meanwhile. Backend CPU is this database's connections only.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import psycopg

from .netns import children_of

TICK = os.sysconf("SC_CLK_TCK")

# What a backend's wait_event_type says, by the names the table uses.
WAITS = ("Lock", "LWLock", "IO", "IPC")


def process_cpu(pid: int) -> float | None:
    """User and system CPU seconds a process has used, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_jiffies() -> tuple[int, int]:
    """Busy and total jiffies of all CPUs since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle and iowait
    return sum(values) - idle, sum(values)


def lsn_bytes(lsn: str) -> int:
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


@dataclass
class Sample:
    at: float
    cpu: dict[tuple[str, int], float]
    busy: int
    total: int
    wal: int
    backends: int = 0
    active: int = 0
    waiting: dict[str, int] = field(default_factory=dict)
    ungranted: int = 0


@dataclass
class Window:
    """What the samples between two moments add up to."""

    seconds: float
    cpu_s: dict[str, float]
    machine_busy: float  # fraction of all CPUs
    wal_bytes: int
    active: float  # mean active backends per sample
    # mean backends waiting per sample, on each kind ("Lock") and event ("Lock:tuple")
    waiting: dict[str, float]
    ungranted: float  # mean lock requests not granted per sample
    samples: int

    def top_wait(self) -> str:
        """The event most waited on, with its mean backends per sample, or '-'."""
        events = {k: v for k, v in self.waiting.items() if ":" in k}
        if not events:
            return "-"
        event = max(events, key=lambda k: events[k])
        return f"{event} ({events[event]:.2f})"


class Sampler(threading.Thread):
    """Samples until ``stop()``. ``groups`` name the pids to follow besides the backends:
    each a callable returning the pids of that group now (children are added)."""

    def __init__(
        self,
        dsn: str,
        groups: dict[str, Callable[[], Iterable[int]]],
        interval: float = 0.1,
    ) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.dsn = dsn
        self.groups = groups
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop_event.is_set():
                self.samples.append(self._sample(conn))
                self._stop_event.wait(self.interval)
            self.samples.append(self._sample(conn))

    def _sample(self, conn: psycopg.Connection[tuple[object, ...]]) -> Sample:
        rows = conn.execute(
            """SELECT pid, state, wait_event_type, wait_event FROM pg_stat_activity
                WHERE datname = current_database() AND pid <> pg_backend_pid()"""
        ).fetchall()
        (ungranted,) = conn.execute(
            # by pid, not pg_locks.database: transaction and tuple locks have none
            """SELECT count(*) FROM pg_locks
                WHERE NOT granted
                  AND pid IN (SELECT pid FROM pg_stat_activity
                               WHERE datname = current_database())"""
        ).fetchone() or (0,)
        (wal,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone() or ("0/0",)
        busy, total = machine_jiffies()
        sample = Sample(time.time(), {}, busy, total, lsn_bytes(str(wal)))
        sample.ungranted = int(str(ungranted))
        for pid, state, wait, event in rows:
            sample.backends += 1
            self._note(sample, "postgres", int(str(pid)))
            if state == "active":
                sample.active += 1
                if wait in WAITS:
                    for key in (str(wait), f"{wait}:{event}"):
                        sample.waiting[key] = sample.waiting.get(key, 0) + 1
        for group, pids in self.groups.items():
            for pid in pids():
                self._note(sample, group, pid)
                for child in children_of(pid):
                    self._note(sample, group, child)
        return sample

    @staticmethod
    def _note(sample: Sample, group: str, pid: int) -> None:
        cpu = process_cpu(pid)
        if cpu is not None:
            sample.cpu[(group, pid)] = cpu

    def window(self, start: float, end: float) -> Window:
        """Totals from the last sample at or before ``start`` to the first at or after
        ``end`` (the nearest ones where none lies beyond)."""
        if len(self.samples) < 2:
            raise RuntimeError("the sampler took fewer than two samples")
        before = [s for s in self.samples if s.at <= start] or self.samples[:1]
        after = [s for s in self.samples if s.at >= end] or self.samples[-1:]
        first, last = before[-1], after[0]
        inside = [s for s in self.samples if first.at <= s.at <= last.at]
        cpu: dict[str, float] = {}
        seen: dict[tuple[str, int], float] = {}
        for s in inside:  # a process's last reading in the window, even if it then ended
            seen.update(s.cpu)
        for key, value in seen.items():
            # a process first seen inside the window used all of its CPU in it
            cpu[key[0]] = cpu.get(key[0], 0.0) + value - first.cpu.get(key, 0.0)
        span = max(last.at - first.at, 1e-9)
        kinds = {k for s in inside for k in s.waiting}
        return Window(
            seconds=span,
            cpu_s=cpu,
            machine_busy=(last.busy - first.busy) / max(last.total - first.total, 1),
            wal_bytes=last.wal - first.wal,
            active=sum(s.active for s in inside) / len(inside),
            waiting={k: sum(s.waiting.get(k, 0) for s in inside) / len(inside) for k in kinds},
            ungranted=sum(s.ungranted for s in inside) / len(inside),
            samples=len(inside),
        )
