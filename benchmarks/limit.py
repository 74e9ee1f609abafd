"""The Postgres ceiling: pgbench scripts doing a queue's work on ``pgqueue.jobs`` itself.

No Python between the statements: one row in per commit, and one or 100 rows claimed with
``FOR UPDATE SKIP LOCKED`` and deleted per commit, by 2 and 8 clients at once.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from glob import glob
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from pgqueue import PgQueue

from .common import BENCH_DIR, SERVER_DSN, Scale, Skip, execute, fresh_database

SCRIPTS = BENCH_DIR / "pgbench"
CLIENTS = (2, 8)

PREFILL = """
INSERT INTO pgqueue.jobs (id, task_name, args)
SELECT gen_random_uuid(), 'bench.noop', jsonb_build_array(i)
  FROM generate_series(1, %(rows)s::bigint) AS i
"""


@dataclass(frozen=True)
class Script:
    name: str
    file: Path
    rows_per_tx: int
    # Run with pgqueue's jobs_notify trigger (a NOTIFY per insert statement) disabled.
    without_notify: bool = False


INSERT = Script("insert 1 row", SCRIPTS / "insert.sql", 1)
INSERT_QUIET = Script("insert 1 row, no NOTIFY trigger", SCRIPTS / "insert.sql", 1, True)
CLAIM_1 = Script("claim+delete 1 row", SCRIPTS / "claim_delete_1.sql", 1)
CLAIM_100 = Script("claim+delete 100 rows", SCRIPTS / "claim_delete_100.sql", 100)


class PostgresServer:
    """What the ceiling runs against: a fresh database holding only the pgqueue schema."""

    name = "postgres"

    def __init__(self) -> None:
        self.dsn = ""

    def unavailable(self) -> str | None:
        try:
            find_pgbench()
        except Skip as skip:
            return str(skip)
        return None

    @contextlib.contextmanager
    def session(self, workload: str) -> Iterator[None]:
        with fresh_database(self.name, workload) as dsn:
            self.dsn = dsn
            PgQueue(dsn=dsn).migrate()
            yield


def find_pgbench() -> str:
    """pgbench from PATH, else from the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("pgbench") or next(
        iter(sorted(glob("/usr/lib/postgresql/*/bin/pgbench"), reverse=True)), None
    )
    if not found:
        raise Skip("pgbench not found (it ships with the postgresql server packages)")
    return found


def _connection_args(dsn: str) -> list[str]:
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    args = ["-h", params.get("host", "127.0.0.1"), "-p", params.get("port", "5432")]
    args += ["-U", params.get("user", "postgres"), params["dbname"]]
    return args


def run_pgbench(dsn: str, script: Script, clients: int, scale: Scale) -> float:
    """One pgbench run; rows per second."""
    pgbench = find_pgbench()
    execute(dsn, "TRUNCATE pgqueue.jobs")
    trigger = "DISABLE" if script.without_notify else "ENABLE"
    execute(dsn, f"ALTER TABLE pgqueue.jobs {trigger} TRIGGER jobs_notify")
    if script.file.name == "insert.sql":
        budget = ["-T", str(scale.pgbench_insert_s)]
    else:
        rows = scale.pgbench_claim1_rows if script is CLAIM_1 else scale.pgbench_claim100_rows
        per_client = max(1, rows // (clients * script.rows_per_tx))
        # Enough rows that no claim comes back short before the last transaction.
        execute(dsn, PREFILL, {"rows": int(per_client * clients * script.rows_per_tx * 1.1)})
        execute(dsn, "VACUUM ANALYZE pgqueue.jobs")
        budget = ["-t", str(per_client)]
    argv = [pgbench, "-n", "-f", str(script.file), "-c", str(clients), "-j", str(min(clients, 2))]
    env_password = conninfo_to_dict(SERVER_DSN).get("password")
    env = {"PGPASSWORD": str(env_password)} if env_password else None
    done = subprocess.run(
        argv + budget + _connection_args(dsn),
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    match = re.search(r"^tps = ([\d.]+)", done.stdout, re.MULTILINE)
    if done.returncode != 0 or not match:
        raise RuntimeError(f"pgbench failed ({done.returncode}): {done.stderr or done.stdout}")
    return float(match.group(1)) * script.rows_per_tx
