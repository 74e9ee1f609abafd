"""Fixtures of the chaos suite: real workers of tests.chaos.chaosapp that tests kill, private
Postgres servers they restart, network namespaces they cut, and the analysis of what ran.

Everything a fixture makes is undone by its finalizer, also when the test fails: worker
processes and any child they left, servers (pg_ctl stop -m immediate, data removed) and
namespaces with their veth pairs.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from tests.chaos import chaosapp
from tests.conftest import ROOT, wait_for

# The long soak: PGQUEUE_CHAOS_SOAK=1 pytest tests/chaos
SOAK = os.environ.get("PGQUEUE_CHAOS_SOAK", "") not in ("", "0")

KILLS_DDL = """
CREATE TABLE IF NOT EXISTS public.chaos_kills (
    pid    integer NOT NULL,
    kind   text NOT NULL,            -- 'worker', 'child' or 'backend'
    -- the database's clock just before the signal was sent: a run the kill ends really
    -- ends a little later, and a legitimate second run starts later still
    at     timestamptz NOT NULL,
    -- and once the process was seen dead: a run that started before this is ended by it
    done   timestamptz NOT NULL,
    detail text
);
CREATE TABLE IF NOT EXISTS public.chaos_jobs (
    job_id uuid PRIMARY KEY,
    task   text NOT NULL
);
"""


def create_tables(conn: psycopg.Connection[Any]) -> None:
    conn.execute(chaosapp.RUNS_DDL)
    conn.execute(KILLS_DDL)


def job_mix(rng: random.Random, n: int) -> list[Any]:
    """Signatures of ``n`` jobs: short, slow, failing-then-retrying, at-most-once, countdown."""
    sigs = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.02:
            sigs.append(chaosapp.slow.s(round(rng.uniform(0.2, 1.0), 2)))
        elif kind < 0.08:
            sigs.append(chaosapp.flaky.s(rng.choice([1, 2])))
        elif kind < 0.12:
            sigs.append(chaosapp.flaky_self.s(rng.choice([1, 2])))
        elif kind < 0.22:
            sigs.append(chaosapp.once.s(rng.choice([0.0, 0.0, 0.02, 0.1])))
        elif kind < 0.27:
            sigs.append(chaosapp.short.s().set(countdown=round(rng.uniform(0.5, 5.0), 2)))
        else:
            sigs.append(chaosapp.short.s())
    return sigs


def enqueue(db: psycopg.Connection[Any], sigs: list[Any], *, single: bool = False) -> None:
    """Queue the jobs (in one batch, or one call each) and note them in chaos_jobs."""
    results = [s.apply_async() for s in sigs] if single else chaosapp.app.enqueue_many(sigs)
    with db.cursor() as cur, cur.copy("COPY public.chaos_jobs (job_id, task) FROM STDIN") as copy:
        for r, sig in zip(results, sigs, strict=True):
            copy.write_row((r.id, sig.task))


# -- processes -------------------------------------------------------------------------------


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] in ("Z", "X"):  # a zombie is dead, only not yet reaped
        return None
    return int(fields[1])


def alive(pid: int) -> bool:
    return _ppid(pid) is not None


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _ppid(int(entry)) == pid:
            found.append(int(entry))
    return found


def _is_ours(pid: int) -> bool:
    """Whether ``pid`` is still a pgqueue process (not a recycled pid of someone else)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"pgqueue" in f.read()
    except OSError:
        return False


class ChaosWorker:
    """A real ``pgqueue worker -A tests.chaos.chaosapp:app`` process, optionally run inside a
    network namespace, logging to a file in the test's directory."""

    def __init__(
        self,
        dsn: str,
        name: str,
        args: list[str],
        log_dir: Path,
        *,
        conf: dict[str, Any],
        record_sync: str = "on",
        netns: str | None = None,
    ) -> None:
        self.dsn, self.name, self.args = dsn, name, args
        env = {
            **os.environ,
            "PGQUEUE_DSN": dsn,
            "PYTHONPATH": str(ROOT),
            "PGQUEUE_CHAOS_CONF": json.dumps(conf),
            "PGQUEUE_CHAOS_RECORD_SYNC": record_sync,
        }
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - lives as long as the process
        command = [
            sys.executable,
            "-m",
            "pgqueue.cli",
            "worker",
            "-A",
            "tests.chaos.chaosapp:app",
            "-n",
            name,
            "--loglevel",
            os.environ.get("PGQUEUE_CHAOS_LOGLEVEL", "WARNING"),
            *args,
        ]
        if netns:
            # `ip netns exec` execs the command: the pid we get is the worker's own.
            command = ["ip", "netns", "exec", netns, *command]
        self.proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        # Every prefork child ever seen, so that none outlives the test.
        self.seen_children: set[int] = set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def children(self) -> list[int]:
        found = children_of(self.pid)
        self.seen_children.update(found)
        return found

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, db: psycopg.Connection[Any], timeout: float = 60) -> ChaosWorker:
        def registered() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited early:\n{self.output()}")
            row = db.execute("SELECT 1 FROM pgqueue.workers WHERE pid = %s", (self.pid,)).fetchone()
            return row is not None

        wait_for(registered, timeout, f"worker {self.name} to register")
        if "prefork" in self.args:
            self.children()
        return self

    def sigkill(self) -> None:
        self.children()
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int | None:
        """Warm shutdown; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        self.children()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.seen_children:
            if alive(pid) and _is_ours(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._log.close()


class Workers:
    """Starts chaos workers and, at the end of the test, kills every one still running."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[ChaosWorker] = []

    def start(self, dsn: str, name: str, *args: str, **options: Any) -> ChaosWorker:
        w = ChaosWorker(dsn, name, list(args), self.log_dir, **options)
        self.started.append(w)
        return w

    def close(self) -> None:
        for w in self.started:
            w.close()

    def grep(self, needles: list[str]) -> str:
        """Every worker's log lines that mention one of ``needles`` (job ids)."""
        found = []
        for w in self.started:
            for line in w.output().splitlines():
                if any(n in line for n in needles):
                    found.append(f"{w.name}: {line}")
        return "\n".join(found)

    def logs(self, lines: int = 40) -> str:
        """The last lines of every worker's log, for failure messages."""
        parts = []
        for w in self.started:
            tail = "\n".join(w.output().splitlines()[-lines:])
            parts.append(f"--- {w.name} (pid {w.pid}) ---\n{tail}")
        return "\n".join(parts)


@pytest.fixture
def chaos_workers(tmp_path: Path) -> Iterator[Workers]:
    workers = Workers(tmp_path)
    try:
        yield workers
    finally:
        workers.close()


@pytest.fixture
def chaos_db(dsn: str, db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """The test database (shared server, fresh and migrated) with the chaos tables."""
    create_tables(db)
    return db


# -- a private server ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateServer:
    """A Postgres server of our own (initdb, pg_ctl), on a free port; never the shared one."""

    def __init__(self, root: Path, listen: list[str], trust: list[str]) -> None:
        self.root, self.port = root, free_port()
        self.data = root / "data"
        self.listen = ["127.0.0.1", *listen]
        self.trust = trust
        # initdb refuses to run as root: the server runs as the postgres account then.
        self.user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *command: str, timeout: float = 120) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        done = subprocess.run(
            [*prefix, *command], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")

    def init(self) -> None:
        if self.user:
            shutil.chown(self.root, self.user)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(
                f"listen_addresses = '{','.join(self.listen)}'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                "max_connections = 200\n"
                "fsync = on\n"
            )
        with open(self.data / "pg_hba.conf", "a") as f:
            for network in self.trust:
                f.write(f"host all all {network} trust\n")

    def pg_ctl(self, action: str, mode: str = "fast") -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-m", mode,
            "-l", str(self.root / "server.log"), action,
        )  # fmt: skip

    def dsn(self, host: str = "127.0.0.1", **params: Any) -> str:
        extra = "".join(f"&{k}={quote(str(v), safe='')}" for k, v in params.items())
        return f"postgresql://postgres@{host}:{self.port}/postgres?sslmode=disable{extra}"

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "server.log").read_text(errors="replace")
        return ""


def _start_private_server(listen: list[str], trust: list[str]) -> Iterator[PrivateServer]:
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not on PATH")
    # Not under pytest's tmp_path: its parents are private to us, and the server may run as
    # another account.
    root = Path(tempfile.mkdtemp(prefix="pgqueue-chaos-"))
    root.chmod(0o755)
    server = PrivateServer(root, listen, trust)
    try:
        server.init()
        server.pg_ctl("start")
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.pg_ctl("stop", mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def private_server() -> Iterator[PrivateServer]:
    yield from _start_private_server([], [])


# -- a network namespace ---------------------------------------------------------------------


@dataclass
class Netns:
    """A network namespace joined to the host by a veth pair.

    The host end is ``host_if`` with ``host_ip``; the namespace's end has ``ns_ip``. Cutting
    the host end drops every packet between them until it is restored.
    """

    name: str
    host_if: str
    host_ip: str
    ns_ip: str
    network: str
    cuts: list[float] = field(default_factory=list)

    def cut(self) -> None:
        subprocess.run(["ip", "link", "set", self.host_if, "down"], check=True, timeout=10)

    def restore(self) -> None:
        subprocess.run(["ip", "link", "set", self.host_if, "up"], check=True, timeout=10)


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)


@pytest.fixture
def netns() -> Iterator[Netns]:
    if shutil.which("ip") is None:
        pytest.skip("the ip command (iproute2) is not installed")
    tag = os.getpid() % 100000
    octet = os.getpid() % 250 + 1
    ns = Netns(
        name=f"pgqueue-chaos-{tag}",
        host_if=f"pqc{tag}h",
        host_ip=f"10.213.{octet}.1",
        ns_ip=f"10.213.{octet}.2",
        network=f"10.213.{octet}.0/30",
    )
    made = _ip("netns", "add", ns.name)
    if made.returncode != 0:
        pytest.skip(f"network namespaces are not permitted here: {made.stderr.strip()}")
    try:
        steps = [
            ("link", "add", ns.host_if, "type", "veth", "peer", "name", f"pqc{tag}n"),
            ("link", "set", f"pqc{tag}n", "netns", ns.name),
            ("addr", "add", f"{ns.host_ip}/30", "dev", ns.host_if),
            ("link", "set", ns.host_if, "up"),
            ("netns", "exec", ns.name, "ip", "addr", "add", f"{ns.ns_ip}/30", "dev", f"pqc{tag}n"),
            ("netns", "exec", ns.name, "ip", "link", "set", f"pqc{tag}n", "up"),
            ("netns", "exec", ns.name, "ip", "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                pytest.skip(f"cannot set up a veth pair (ip {' '.join(step)}): {done.stderr}")
        yield ns
    finally:
        _ip("link", "del", ns.host_if)  # deletes its peer too
        _ip("netns", "del", ns.name)


@pytest.fixture
def partition_server(netns: Netns) -> Iterator[PrivateServer]:
    """A private server listening on 127.0.0.1 and on the host end of the veth pair."""
    yield from _start_private_server([netns.host_ip], [netns.network])


# -- the analysis ----------------------------------------------------------------------------

# Each run with the time it ended: its own record, else the first kill of its process or of
# its parent (a prefork worker) that it did not outlive: the time the signal was sent, or
# the run's start for a run that began as the signal was on its way. NULL: it neither ended
# nor was killed.
RUNS_WITH_FINISH = """
SELECT r.*,
       coalesce(r.ended,
                (SELECT greatest(min(k.at), r.started) FROM public.chaos_kills AS k
                  WHERE k.kind IN ('worker', 'child') AND k.pid IN (r.pid, r.ppid)
                    AND k.done >= r.started)) AS finish
  FROM public.chaos_runs AS r
"""

# Two runs of one job overlap when the later one started before the earlier one ended.
OVERLAPS = f"""
WITH runs AS ({RUNS_WITH_FINISH})
SELECT a.job_id, a.task, a.worker, a.pid, a.attempt, a.started, a.finish,
       b.worker, b.pid, b.attempt, b.started
  FROM runs AS a JOIN runs AS b
    ON a.job_id = b.job_id AND (a.started, a.run_id) < (b.started, b.run_id)
 WHERE b.started < coalesce(a.finish, 'infinity')
 ORDER BY a.started
"""

# Runs followed by another run of the same job although they did not ask for one (a run
# that raised to be retried did): each must be explained by a kill of its process or of its
# parent after it started and before the next run started.
# A run's "started" is stamped by the server when it executes the run's INSERT, which the
# process may have sent just before its SIGKILL: a run of a killed process that never ended
# can be stamped after the kill was seen done (seen once: 3 ms after). Such a run is still
# the one the kill cut short.
REPEATS = """
WITH ordered AS (
    SELECT r.*, lead(r.started) OVER (PARTITION BY r.job_id ORDER BY r.started, r.run_id)
                AS next_started
      FROM public.chaos_runs AS r
)
SELECT o.job_id, o.task, o.worker, o.pid, o.ppid, o.attempt, o.started, o.ended,
       o.next_started,
       EXISTS (SELECT 1 FROM public.chaos_kills AS k
                WHERE k.kind IN ('worker', 'child') AND k.pid IN (o.pid, o.ppid)
                  AND (k.done >= o.started OR o.ended IS NULL)
                  AND k.at <= o.next_started) AS explained
  FROM ordered AS o
 WHERE o.next_started IS NOT NULL AND o.outcome IS DISTINCT FROM 'retry'
 ORDER BY o.started
"""

# At-most-once jobs that ended FAILURE/WorkerLostError with no kill of the process that
# ran them: a worker that only lost its connection was taken for dead.
FALSE_WORKER_LOST = """
SELECT res.task_id, r.worker, r.pid, r.started, r.ended
  FROM pgqueue.results AS res
  JOIN public.chaos_runs AS r ON r.job_id = res.task_id
 WHERE res.task_name = 'chaos.once' AND res.exc_type = 'pgqueue.exceptions.WorkerLostError'
   AND NOT EXISTS (SELECT 1 FROM public.chaos_kills AS k
                    WHERE k.kind IN ('worker', 'child') AND k.pid IN (r.pid, r.ppid)
                      AND (k.done >= r.started OR r.ended IS NULL))
"""


@dataclass
class Report:
    """What ran, checked against what must hold."""

    jobs: int
    results: int
    left_in_jobs: list[tuple[Any, ...]]
    missing_results: int
    runs: int
    overlaps: list[tuple[Any, ...]]
    repeats: list[tuple[Any, ...]]
    at_most_once_twice: list[tuple[Any, ...]]
    false_worker_lost: list[tuple[Any, ...]]
    states: dict[tuple[str, str], int]
    kills: dict[str, int]

    @property
    def unexplained_repeats(self) -> list[tuple[Any, ...]]:
        return [r for r in self.repeats if not r[-1]]

    def summary(self) -> str:
        return (
            f"{self.jobs} jobs, {self.results} results, {len(self.left_in_jobs)} left in "
            f"pgqueue.jobs, {self.missing_results} without a result, {self.runs} runs; kills "
            f"{self.kills}; {len(self.overlaps)} overlapping pairs; {len(self.repeats)} "
            f"repeated runs ({len(self.unexplained_repeats)} unexplained); "
            f"{len(self.at_most_once_twice)} at-most-once jobs run twice; "
            f"{len(self.false_worker_lost)} false WorkerLostError; final states {self.states}"
        )


def analyse(db: psycopg.Connection[Any]) -> Report:
    def rows(query: str) -> list[tuple[Any, ...]]:
        return db.execute(query).fetchall()

    (jobs,) = db.execute("SELECT count(*) FROM public.chaos_jobs").fetchone() or (0,)
    (results,) = db.execute(
        "SELECT count(*) FROM pgqueue.results AS r JOIN public.chaos_jobs AS j"
        " ON j.job_id = r.task_id"
    ).fetchone() or (0,)
    (missing,) = db.execute(
        "SELECT count(*) FROM public.chaos_jobs AS j WHERE NOT EXISTS"
        " (SELECT 1 FROM pgqueue.results AS r WHERE r.task_id = j.job_id)"
    ).fetchone() or (0,)
    (runs,) = db.execute("SELECT count(*) FROM public.chaos_runs").fetchone() or (0,)
    return Report(
        jobs=jobs,
        results=results,
        left_in_jobs=rows(
            "SELECT id, task_name, state, worker_id, attempt FROM pgqueue.jobs LIMIT 20"
        ),
        missing_results=missing,
        runs=runs,
        overlaps=rows(OVERLAPS),
        repeats=rows(REPEATS),
        at_most_once_twice=rows(
            "SELECT job_id, count(*) FROM public.chaos_runs WHERE task = 'chaos.once'"
            " GROUP BY job_id HAVING count(*) > 1"
        ),
        false_worker_lost=rows(FALSE_WORKER_LOST),
        states={
            (task, state): n
            for task, state, n in rows(
                "SELECT task_name, state || coalesce('/' || exc_type, ''), count(*)"
                " FROM pgqueue.results GROUP BY 1, 2 ORDER BY 1, 2"
            )
        },
        kills={
            kind: n
            for kind, n in rows("SELECT kind, count(*) FROM public.chaos_kills GROUP BY kind")
        },
    )


def clock(db: psycopg.Connection[Any]) -> Any:
    """The database's clock_timestamp()."""
    (at,) = db.execute("SELECT clock_timestamp()").fetchone() or (None,)
    return at


def record_kill(
    db: psycopg.Connection[Any], pid: int, kind: str, at: Any, detail: str = ""
) -> None:
    """Record a kill sent at ``at`` whose process is dead now."""
    db.execute(
        "INSERT INTO public.chaos_kills (pid, kind, at, done, detail)"
        " VALUES (%s, %s, %s, clock_timestamp(), %s)",
        (pid, kind, at, detail),
    )


def explain(db: psycopg.Connection[Any], job_ids: list[Any]) -> str:
    """The runs of these jobs and every kill, in time order, for a failure message."""
    lines = []
    for row in db.execute(
        "SELECT started, 'run', job_id::text, task || ' attempt ' || attempt || ' on '"
        " || worker || ' pid ' || pid || ' ppid ' || ppid || ' ended '"
        " || coalesce(to_char(ended, 'HH24:MI:SS.US'), '-') || ' ' || coalesce(outcome, '')"
        " FROM public.chaos_runs WHERE job_id = ANY(%s)"
        " UNION ALL SELECT at, kind, pid::text, detail || ' done '"
        " || to_char(done, 'HH24:MI:SS.US') FROM public.chaos_kills"
        " UNION ALL SELECT date_done, 'result', task_id::text, state || ' '"
        " || coalesce(exc_type, '') || ' ' || coalesce(worker, '')"
        " FROM pgqueue.results WHERE task_id = ANY(%s) ORDER BY 1",
        (job_ids, job_ids),
    ):
        lines.append(f"{row[0]:%H:%M:%S.%f} {row[1]:8} {row[2]} {row[3]}")
    return "\n".join(lines)
