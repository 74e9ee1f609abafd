"""CPU per job of a drain: the worker's processes and their Postgres backends, from /proc.

On a shared machine wall-clock rates move with everyone else's load; the CPU a job costs
does much less. One run: a fresh database, an idle worker, then ``--jobs`` jobs enqueued in
one transaction; the CPU time of the worker (its children included) and of every backend
of that database but this script's own is read before the enqueue and once the queue is
empty, and divided by the number of jobs.

    python -m benchmarks.cpujob --pool threads -c 512 --prefetch 1 --task bench.noop_ignore

To compare two versions, run it from each one's tree, taking turns (ABAB), e.g. with
``PYTHONPATH=/path/to/other/tree``: the worker is started with the same PYTHONPATH, so each
run measures the pgqueue it imports.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

import psutil
import psycopg

TASK_ARGS = {"bench.cpu": lambda i: (i, 10.0)}


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU of ``pids`` and their live descendants (and the children they
    waited for)."""
    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for p in procs:
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system + t.children_user + t.children_system
    return total


def backends(conn: psycopg.Connection, mine: set[int]) -> list[int]:
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
    ).fetchall()
    return [r[0] for r in rows if r[0] not in mine]


def commits(conn: psycopg.Connection) -> int:
    """Transactions committed in this database (pg_stat_database)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    return int(row[0])


def run_once(args: argparse.Namespace) -> dict[str, float]:
    from pgqueue import PgQueue

    name = f"cpujob_{uuid.uuid4().hex[:8]}"
    admin = args.dsn
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = f"{admin.rsplit('/', 1)[0]}/{name}"
    worker = None
    try:
        app = PgQueue("cpujob", dsn=dsn)
        app.migrate()
        if args.log_stats:
            # Each statement's duration and CPU in the server's log (superuser only).
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(
                    f"ALTER DATABASE {name} SET log_min_duration_statement = 0; "
                    f"ALTER DATABASE {name} SET log_statement_stats = on"
                )
        argv = [sys.executable, "-m", "pgqueue", "worker", "-A", "benchmarks.pgqueue_app:app"]
        argv += ["-P", args.pool, "-c", str(args.concurrency), "-l", "warning"]
        if args.prefetch:
            argv += ["--prefetch-multiplier", str(args.prefetch)]
        env = {**os.environ, "PGQUEUE_DSN": dsn}
        pids = []
        worker = [subprocess.Popen(argv, env=env) for _ in range(args.processes)]
        pids = [w.pid for w in worker]
        with psycopg.connect(dsn, autocommit=True) as mon:
            mine = {mon.info.backend_pid}
            deadline = time.monotonic() + 60
            while mon.execute("SELECT count(*) FROM pgqueue.workers").fetchone()[0] < len(pids):
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker did not register")
                time.sleep(0.1)
            time.sleep(1.0)  # let the pool and the maintenance services settle
            from benchmarks.pgqueue_app import make_app

            producer = make_app(dsn)
            task = producer.tasks[args.task]
            make = TASK_ARGS.get(args.task, lambda i: (i,))
            calls = [make(i) for i in range(args.jobs)]
            with producer.connect() as pconn:
                mine.add(pconn.info.backend_pid)
                bk = backends(mon, mine)
                x0 = commits(mon)
                w0, b0 = cpu_seconds(pids), cpu_seconds(bk)
                t0 = time.monotonic()
                with pconn.transaction():
                    task.enqueue_many(calls, connection=pconn)
            while mon.execute("SELECT EXISTS (SELECT 1 FROM pgqueue.jobs)").fetchone()[0]:
                if time.monotonic() - t0 > args.timeout:
                    raise RuntimeError("the drain did not finish in time")
                time.sleep(0.02)
            t1 = time.monotonic()
            bk_end = backends(mon, mine)
            w1 = cpu_seconds(pids)
            b1 = cpu_seconds([p for p in bk if p in bk_end]) + cpu_seconds(
                [p for p in bk_end if p not in bk]
            )
            time.sleep(1.0)  # statistics reach the view up to a second late
            xacts = commits(mon) - x0
            stored = mon.execute("SELECT count(*) FROM pgqueue.results").fetchone()[0]
        return {
            "worker_us": (w1 - w0) / args.jobs * 1e6,
            "backend_us": (b1 - b0) / args.jobs * 1e6,
            "total_us": ((w1 - w0) + (b1 - b0)) / args.jobs * 1e6,
            "wall_rate": args.jobs / (t1 - t0),
            "xacts_per_job": xacts / args.jobs,
            "results": stored,
        }
    finally:
        for w in worker or []:
            w.terminate()
        for w in worker or []:
            try:
                w.wait(20)
            except subprocess.TimeoutExpired:
                w.kill()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--pool", default="threads")
    parser.add_argument("-c", "--concurrency", type=int, default=512)
    parser.add_argument("--prefetch", type=int, default=1)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--task", default="bench.noop_ignore")
    parser.add_argument("--jobs", type=int, default=30000)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument(
        "--log-stats", action="store_true", help="each statement's CPU, in the server log"
    )
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    runs = [run_once(args) for _ in range(args.reps)]
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    out["root"] = os.path.dirname(os.path.dirname(__import__("pgqueue").__file__))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
