"""What every benchmark module shares: scales, databases, worker processes, waiting, timing."""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent

# The server the benchmarks create their databases on.
SERVER_DSN = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")


@dataclass(frozen=True)
class Scale:
    """How big each workload is. ``QUICK`` divides the counts by about 20."""

    reps: int = 3
    enqueue_single: int = 5_000
    enqueue_bulk: int = 100_000
    drain: int = 100_000
    # A drain still running after this long is stopped and its rate taken from the jobs done.
    drain_cap_s: float = 30.0
    latency_interval_s: float = 0.020
    latency_duration_s: float = 10.0
    backlogs: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    backlog_ready: int = 10_000
    # pgbench: rows each claim script consumes in one run; the insert script runs this long.
    pgbench_claim1_rows: int = 20_000
    pgbench_claim100_rows: int = 200_000
    pgbench_insert_s: int = 5
    cpu_jobs: int = 2_000
    cpu_ms: float = 10.0
    # table-size: jobs run per round; sizes are read after each round
    table_size_jobs: int = 1_000_000
    table_size_rounds: int = 3

    def scaled(self, reps: int | None) -> Scale:
        return self if reps is None else replace(self, reps=reps)


FULL = Scale()
QUICK = Scale(
    enqueue_single=250,
    enqueue_bulk=5_000,
    drain=5_000,
    drain_cap_s=15.0,
    latency_duration_s=3.0,
    backlogs=(500, 5_000, 50_000),
    backlog_ready=1_000,
    pgbench_claim1_rows=2_000,
    pgbench_claim100_rows=10_000,
    pgbench_insert_s=1,
    cpu_jobs=100,
    table_size_jobs=50_000,
)


class Skip(Exception):
    """A system or workload that cannot run here; the message says why."""


# -- results ------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table: a metric measured over several repetitions."""

    workload: str
    system: str
    config: str
    metric: str
    unit: str
    values: list[float] = field(default_factory=list)
    note: str = ""
    skipped: str | None = None
    # higher is better (rates) or lower is better (latencies, times)
    higher_is_better: bool = True

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def as_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "system": self.system,
            "config": self.config,
            "metric": self.metric,
            "unit": self.unit,
            "median": self.median,
            "min": min(self.values) if self.values else None,
            "max": max(self.values) if self.values else None,
            "values": self.values,
            "note": self.note,
            "skipped": self.skipped,
        }


@dataclass
class Span:
    """When a run's jobs completed: first and last completion (epoch seconds) and how many.

    ``first_batch`` jobs completed at ``first`` itself; they are not counted in the rate,
    which covers the interval from the first completion to the last.
    """

    first: float
    last: float
    count: int
    first_batch: int = 1

    @property
    def rate(self) -> float:
        elapsed = self.last - self.first
        if elapsed <= 0:
            return float("nan")
        return (self.count - self.first_batch) / elapsed


@dataclass
class DrainRun:
    """One drain: start-up (spawn to first completion) and the completion span."""

    startup_s: float
    span: Span
    expected: int
    capped: bool = False

    @property
    def rate(self) -> float:
        return self.span.rate


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# -- databases ----------------------------------------------------------------------------


def dsn_for(dbname: str) -> str:
    """A URL for ``dbname`` on the benchmark server (asyncpg accepts only URLs)."""
    params = {k: str(v) for k, v in conninfo_to_dict(SERVER_DSN).items()}
    user = quote(params.pop("user", "postgres"), safe="")
    password = params.pop("password", None)
    host = params.pop("host", "127.0.0.1")
    port = params.pop("port", "5432")
    params.pop("dbname", None)
    auth = f"{user}:{quote(password, safe='')}" if password else user
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql://{auth}@{host}:{port}/{quote(dbname, safe='')}{query}"


def create_database(name: str) -> str:
    """Create an empty database (dropping a leftover of the same name) and return its DSN."""
    drop_database(name)
    with psycopg.connect(SERVER_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return dsn_for(name)


def drop_database(name: str) -> None:
    with psycopg.connect(SERVER_DSN, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def database_name(system: str, workload: str) -> str:
    return f"bench_{system}_{workload.replace('-', '_')}_{os.getpid()}"


@contextlib.contextmanager
def fresh_database(system: str, workload: str) -> Iterator[str]:
    """A new database for one system and workload, dropped afterwards."""
    name = database_name(system, workload)
    dsn = create_database(name)
    try:
        yield dsn
    finally:
        drop_database(name)


def server_reachable() -> str | None:
    """None if the Postgres server answers, else the reason it does not."""
    try:
        with psycopg.connect(SERVER_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        return f"Postgres not reachable at {SERVER_DSN}: {str(exc).strip().splitlines()[0]}"
    return None


def execute(dsn: str, statement: str, params: Any = None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement, params)


def fetchone(dsn: str, statement: str, params: Any = None) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(statement, params).fetchone()


# -- waiting --------------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def sleep_until(when: float) -> None:
    """Sleep until the epoch time ``when`` (no-op if it has passed)."""
    delay = when - time.time()
    if delay > 0:
        time.sleep(delay)


# -- worker processes -----------------------------------------------------------------------


def bench_env(**extra: str) -> dict[str, str]:
    """The environment for worker processes: the repo on the path, plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class WorkerProcess:
    """A worker started as a subprocess in its own process group, with its output in a file."""

    def __init__(self, argv: Sequence[str], *, env: dict[str, str], label: str) -> None:
        self.argv = list(argv)
        self.label = label
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix=f"bench-{label}-", suffix=".log", delete=False
        )
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            self.argv,
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def exited(self) -> bool:
        return self.proc.poll() is not None

    def output(self, tail: int = 2000) -> str:
        self.log.flush()
        text = Path(self.log.name).read_text(errors="replace")
        return text[-tail:]

    def stop(self, timeout: float = 15.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL the whole group if it lingers."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        # Children (prefork) left behind by a worker that exited are killed too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)

    def check_alive(self) -> None:
        if self.exited():
            raise RuntimeError(
                f"{self.label} worker exited with code {self.proc.returncode}:\n{self.output()}"
            )


class WorkerGroup:
    """Several worker processes of one configuration, run and stopped together."""

    def __init__(self, workers: list[WorkerProcess]) -> None:
        self.workers = workers
        self.started_at = min(w.started_at for w in workers)

    def check_alive(self) -> None:
        for worker in self.workers:
            worker.check_alive()

    def stop(self, timeout: float = 15.0) -> None:
        for worker in self.workers:
            worker.stop(timeout)


@contextlib.contextmanager
def running(worker: WorkerProcess | WorkerGroup) -> Iterator[WorkerProcess | WorkerGroup]:
    try:
        yield worker
    finally:
        worker.stop()


PYTHON = sys.executable


# -- latency records ------------------------------------------------------------------------


def latency_file() -> Path:
    """A fresh file the latency task appends ``index<TAB>start time`` lines to."""
    fd, path = tempfile.mkstemp(prefix="bench-latency-", suffix=".tsv")
    os.close(fd)
    return Path(path)


def read_latency_file(path: Path) -> dict[int, float]:
    starts: dict[int, float] = {}
    for line in path.read_text().splitlines():
        index, _, started = line.partition("\t")
        if started:
            starts.setdefault(int(index), float(started))
    return starts


def latencies_ms(committed: dict[int, float], started: dict[int, float]) -> list[float]:
    """Enqueue-commit to task-start, in milliseconds, for every job that started."""
    return [(started[i] - committed[i]) * 1000 for i in committed if i in started]
