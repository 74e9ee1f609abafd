"""The systems under test, each behind the same small interface.

A system knows how to give itself a fresh store (database or Redis), enqueue jobs one at a
time and in bulk, start a worker process in a given configuration, and say when the jobs
a worker ran completed. The workloads (``benchmarks/workloads.py``) do the rest.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..common import (
    DrainRun,
    Skip,
    Span,
    WorkerGroup,
    WorkerProcess,
    fresh_database,
    latencies_ms,
    latency_file,
    read_latency_file,
    running,
    sleep_until,
    wait_until,
)
from ..taskbodies import LATENCY_FILE_ENV

# What a drain runs: no-op jobs whose results are stored, no-op jobs without results, or
# jobs burning CPU.
RESULTS = "results"
IGNORE_RESULT = "ignore_result"
CPU = "cpu"


@dataclass(frozen=True)
class WorkerConfig:
    """How to run a system's worker; ``label`` is what the table shows. ``processes``
    worker processes run side by side in drains (each a separate command, as a user would
    start them); the latency workload always runs one."""

    label: str
    options: dict[str, Any] = field(default_factory=dict)
    processes: int = 1

    def times(self, processes: int) -> WorkerConfig:
        """The same configuration, run as ``processes`` worker processes."""
        return WorkerConfig(self.label, self.options, processes)

    @property
    def described(self) -> str:
        """The label with the number of processes, for the table."""
        return self.label + (f"; {self.processes} processes" if self.processes > 1 else "")


class System(ABC):
    """One task queue under test."""

    name: ClassVar[str]
    # The drain variants this system runs, and how the table names them.
    drain_variants: ClassVar[tuple[str, ...]] = (RESULTS,)
    variant_labels: ClassVar[dict[str, str]]
    # The first config is the one the workloads use; the drain-sweep workload runs them
    # all, which is how the first was chosen.
    drain_configs: ClassVar[tuple[WorkerConfig, ...]]
    enqueue_single_label: ClassVar[str]
    enqueue_bulk_label: ClassVar[str]

    def __init__(self) -> None:
        self.dsn = ""
        self.workload = ""

    # -- availability and stores ---------------------------------------------------------

    def unavailable(self) -> str | None:
        """Why this system cannot run here (a missing package or service), or None."""
        return None

    @contextlib.contextmanager
    def session(self, workload: str) -> Iterator[None]:
        """A fresh database for one workload, with the system's schema installed."""
        self.workload = workload
        with fresh_database(self.name, workload) as dsn:
            self.dsn = dsn
            self.install()
            try:
                yield
            finally:
                self.close()

    @abstractmethod
    def install(self) -> None:
        """Create the system's schema in ``self.dsn``."""

    @abstractmethod
    def reset(self) -> None:
        """Empty the queue and its results between repetitions."""

    def close(self) -> None:  # noqa: B027 - most systems hold nothing open
        """Release connections opened for the session."""

    # -- producing -------------------------------------------------------------------------

    @abstractmethod
    def enqueue_single(self, n: int) -> float:
        """Enqueue ``n`` no-op jobs, one call and one commit each; seconds taken."""

    @abstractmethod
    def enqueue_bulk(self, n: int) -> float:
        """Enqueue ``n`` no-op jobs through the library's batch API; seconds taken."""

    @abstractmethod
    def enqueue_for_drain(self, n: int, variant: str, cpu_ms: float) -> None:
        """Queue the jobs a drain will run, by the fastest means (not timed)."""

    @contextlib.contextmanager
    @abstractmethod
    def latency_producer(self) -> Iterator[Callable[[int], None]]:
        """A function that enqueues latency job ``i`` and returns once it is committed."""

    # -- consuming -------------------------------------------------------------------------

    @abstractmethod
    def start_worker(
        self, config: WorkerConfig, variant: str, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        """Start a worker process for this variant's task."""

    def cpu_config(self, concurrency: int) -> WorkerConfig:
        """The process-pool configuration for the CPU-bound workload."""
        raise Skip(f"{self.name} has no process pool: CPU-bound tasks share one GIL")

    @abstractmethod
    def completed(self, variant: str) -> int:
        """How many of the drain's jobs have completed (cheap enough to poll)."""

    @abstractmethod
    def completion_span(self, variant: str) -> Span:
        """When the drain's jobs completed, from the system's own records."""

    def wait_drained(
        self, worker: WorkerProcess | WorkerGroup, n: int, variant: str, timeout: float
    ) -> bool:
        """Wait for all ``n`` jobs to complete; False if ``timeout`` passed first."""

        def done() -> bool:
            worker.check_alive()
            return self.completed(variant) >= n

        return wait_until(done, timeout=timeout, interval=0.2)

    def drain(
        self,
        n: int,
        config: WorkerConfig,
        variant: str,
        cap_s: float,
        cpu_ms: float = 0,
        *,
        fresh: bool = True,
    ) -> DrainRun:
        """Queue ``n`` jobs, start a worker, and time it through them.

        ``fresh``: empty the queue first; without it the caller has cleared the records of
        earlier runs and other queued jobs stay.
        """
        if fresh:
            self.reset()
        self.enqueue_for_drain(n, variant, cpu_ms)
        worker: WorkerProcess | WorkerGroup = (
            self.start_worker(config, variant)
            if config.processes == 1
            else WorkerGroup([self.start_worker(config, variant) for _ in range(config.processes)])
        )
        with running(worker):
            finished = self.wait_drained(worker, n, variant, cap_s)
        span = self.completion_span(variant)
        return DrainRun(span.first - worker.started_at, span, n, capped=not finished)

    def latency(self, config: WorkerConfig, interval: float, duration: float) -> list[float]:
        """Enqueue one job every ``interval`` s to an idle worker; latencies in ms."""
        self.reset()
        path = latency_file()
        worker = self.start_worker(config, "latency", env={LATENCY_FILE_ENV: str(path)})
        try:
            with running(worker), self.latency_producer() as send:
                # A first job shows the worker is up; then let it fall idle.
                send(-1)

                def warmed_up() -> bool:
                    worker.check_alive()
                    return -1 in read_latency_file(path)

                if not wait_until(warmed_up, timeout=60):
                    raise RuntimeError(f"{self.name}: worker never ran the warm-up job")
                time.sleep(1.0)
                committed: dict[int, float] = {}
                start = time.time()
                for i in range(round(duration / interval)):
                    sleep_until(start + i * interval)
                    send(i)
                    committed[i] = time.time()
                wait_until(lambda: len(read_latency_file(path)) > len(committed), timeout=30)
                started = read_latency_file(path)
        finally:
            path.unlink(missing_ok=True)
        missing = len(committed) - len(latencies_ms(committed, started))
        if missing:
            raise RuntimeError(f"{self.name}: {missing} latency job(s) never started")
        return latencies_ms(committed, started)


def all_systems() -> list[System]:
    from .celery_redis import CeleryRedis
    from .pgqueue import Pgqueue
    from .pgqueuer_ import Pgqueuer
    from .procrastinate_ import Procrastinate

    return [Pgqueue(), CeleryRedis(), Procrastinate(), Pgqueuer()]


__all__ = [
    "CPU",
    "IGNORE_RESULT",
    "RESULTS",
    "Skip",
    "System",
    "WorkerConfig",
    "all_systems",
]
