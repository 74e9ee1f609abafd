"""The task bodies every system runs, so that all of them do exactly the same work."""

from __future__ import annotations

import os
import time

# Set by the harness in the worker's environment for the latency workload.
LATENCY_FILE_ENV = "BENCH_LATENCY_FILE"


def burn_cpu(ms: float) -> None:
    """Spin for ``ms`` milliseconds of this thread's CPU time."""
    end = time.thread_time() + ms / 1000
    while time.thread_time() < end:
        pass


def record_start(index: int) -> None:
    """Note when job ``index`` started; the harness compares it with its commit time."""
    started = time.time()
    path = os.environ[LATENCY_FILE_ENV]
    # O_APPEND writes this small are atomic, so prefork children can share the file.
    with open(path, "a") as f:
        f.write(f"{index}\t{started!r}\n")
