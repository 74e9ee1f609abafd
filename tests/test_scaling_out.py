"""Past one Postgres: queues split across databases by name (docs/scaling-out.md)."""

from __future__ import annotations

import psycopg

from pgqueue import migrate
from tests import shardapp
from tests.conftest import WorkerProcess, dsn_of


def test_queues_split_across_databases_run_each_in_its_own(dsn, db, bare_postgresql, monkeypatch):
    bare_postgresql.autocommit = True
    migrate.migrate(bare_postgresql)
    second = dsn_of(bare_postgresql)
    monkeypatch.setenv("SHARD_ORDERS_DSN", dsn)
    monkeypatch.setenv("SHARD_EMAILS_DSN", second)
    orders, emails = shardapp.make("orders", dsn), shardapp.make("emails", second)
    router = shardapp.Router(orders, emails)
    with psycopg.connect(second, autocommit=True) as db2:
        workers = {
            "orders": WorkerProcess(dsn, ["-P", "threads", "-c", "2"], db, "tests.shardapp:orders"),
            "emails": WorkerProcess(
                second, ["-P", "threads", "-c", "2"], db2, "tests.shardapp:emails"
            ),
        }
        try:
            for w in workers.values():
                w.wait_ready()
            sent = [
                (queue, router.send_task("shard.where", (f"{queue}-{i}",), queue=queue))
                for i in range(10)
                for queue in ("orders", "emails")
            ]
            for queue, r in sent:
                assert r.get(timeout=30)["pid"] == workers[queue].pid
            for conn, queue in ((db, "orders"), (db2, "emails")):
                rows = conn.execute("SELECT queue, count(*) FROM pgqueue.results GROUP BY 1")
                assert rows.fetchall() == [(queue, 10)]
        finally:
            for w in workers.values():
                w.close()
            orders.close()
            emails.close()
