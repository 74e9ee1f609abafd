"""Every example runs end to end against a real database."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import subprocess
import sys
from typing import Any

import httpx
import psycopg

from pgqueue.db import describe
from tests.conftest import ROOT, WorkerProcess, wait_for

SHOP = ROOT / "examples" / "flask_shop"
SIGNUPS = ROOT / "examples" / "fastapi_app"


def test_quickstart_runs_end_to_end(dsn):
    proc = subprocess.run(
        [sys.executable, "examples/quickstart/run.py"],
        cwd=ROOT,
        env={**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "add(2, 3) enqueued in a committed transaction -> 5" in proc.stdout
    assert "rolled-back transaction -> PENDING" in proc.stdout
    assert "divide(1, 0) -> FAILURE: ZeroDivisionError" in proc.stdout
    assert "sum of results 9900" in proc.stdout


def test_demo_tours_a_worker_with_beat_and_a_rolled_back_job(dsn):
    proc = subprocess.run(
        [sys.executable, "-m", "pgqueue.cli", "demo"],
        cwd=ROOT,
        env={**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert f"database: {describe(dsn)} (from --dsn or PGQUEUE_DSN)" in out
    assert re.search(r"transaction rolled back\s+PENDING\s+job row: no", out), out
    assert re.search(r"add\(2, 3\)\s+SUCCESS\s+5\n", out), out
    assert re.search(r"divide\(1, 0\)\s+FAILURE\s+ZeroDivisionError: division by zero", out), out
    assert "'order 1 charged after 1 retry' (retries: 1)" in out
    assert re.search(r"demo-tick\s+every 1s\s+sent [2-9]", out), out
    assert "jobs of this tour left in pgqueue.jobs: 0" in out
    assert "worker stopped (exit 0)" in out


def _load_example(name: str, path: Any) -> Any:
    """An example's module, imported as its worker imports it (as module ``name``)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _load_shop() -> Any:
    """examples/flask_shop/shop.py, imported as the worker imports it (module ``shop``)."""
    return _load_example("shop", SHOP / "shop.py")


def test_flask_order_and_its_job_commit_together_or_not_at_all(dsn, db):
    shop = _load_shop()
    client = shop.create_app().test_client()

    placed = client.post("/orders", json={"item": "tea", "quantity": 2})
    assert placed.status_code == 201, placed.get_data(as_text=True)
    order_id, job_id = placed.json["order_id"], placed.json["confirmation_id"]
    job = db.execute("SELECT task_name, args FROM pgqueue.jobs WHERE id = %s", (job_id,)).fetchone()
    assert job == ("shop.send_confirmation", [order_id])

    failed = client.post("/orders/fail", json={"item": "cake", "quantity": 1})
    assert failed.status_code == 500
    assert "failed after its insert" in failed.json["error"]
    assert [r[0] for r in db.execute("SELECT item FROM orders")] == ["tea"]
    jobs = db.execute("SELECT id::text FROM pgqueue.jobs").fetchall()
    assert jobs == [(job_id,)]
    assert client.get("/orders").json == {"orders": [order_id]}
    assert client.post("/orders", json={"item": "tea"}).status_code == 400


def test_flask_order_is_confirmed_by_a_worker(dsn, db):
    client = _load_shop().create_app().test_client()
    worker = subprocess.Popen(
        [sys.executable, "-m", "pgqueue.cli", "worker", "-A", "shop:queue", "-c", "1"],
        cwd=SHOP,
        env={**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        order_id = client.post("/orders", json={"item": "tea", "quantity": 2}).json["order_id"]

        def confirmed() -> Any:
            shown = client.get(f"/orders/{order_id}").json
            return shown if shown["confirmation"]["state"] == "SUCCESS" else None

        shown = wait_for(confirmed, 30, "the worker to send the confirmation")
        assert shown["confirmation"]["result"] == (
            f"confirmation for order {order_id} (2 x tea) sent"
        )
        assert client.get("/orders/999").status_code == 404
    finally:
        worker.terminate()
        assert worker.wait(30) == 0


def test_sql_trigger_enqueues_in_the_inserting_transaction(dsn, db):
    db.execute((ROOT / "examples" / "sql_enqueue.sql").read_text())
    job_id = db.execute(
        "INSERT INTO signups (email) VALUES ('ada@example.com') RETURNING welcome_job"
    ).fetchone()[0]
    job = db.execute(
        "SELECT task_name, args, queue FROM pgqueue.jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert job == ("emails.send", ["ada@example.com"], "emails")

    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO signups (email) VALUES ('bob@example.com')")
        conn.rollback()
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()[0] == 1

    db.execute((ROOT / "examples" / "sql_enqueue.sql").read_text())  # loading twice is fine
    db.execute("INSERT INTO signups (email) VALUES ('cy@example.com')")
    args = [r[0] for r in db.execute("SELECT args FROM pgqueue.jobs ORDER BY enqueued_at")]
    assert args == [["ada@example.com"], ["cy@example.com"]]


def test_fastapi_signup_and_its_job_commit_together_and_its_result_is_awaited(dsn, db):
    signups = _load_example("signups", SIGNUPS / "signups.py")
    api = signups.create_app()
    workers: list[WorkerProcess] = []

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://signups") as client:
            placed = await client.post("/signups", json={"email": "ada@example.com"})
            assert placed.status_code == 201, placed.text
            signup_id, welcome_id = placed.json()["signup_id"], placed.json()["welcome_id"]

            failed = await client.post("/signups/fail", json={"email": "bob@example.com"})
            assert failed.status_code == 500
            assert "failed after its insert" in failed.json()["error"]
            assert (await client.get("/signups")).json() == {"signups": [signup_id]}
            jobs = db.execute("SELECT id::text, task_name FROM pgqueue.jobs").fetchall()
            assert jobs == [(welcome_id, "signups.send_welcome")]

            # Started once the job is seen waiting. It imports the example from the
            # checkout's top; the task's name is explicit, so the module's name is moot.
            app = "examples.fastapi_app.signups:queue"
            workers.append(WorkerProcess(dsn, ["-c", "1"], db, app=app).wait_ready())
            welcome = await client.get(f"/signups/{signup_id}/welcome", params={"timeout": 30})
            assert welcome.status_code == 200, welcome.text
            assert welcome.json() == {
                "id": welcome_id,
                "state": "SUCCESS",
                "result": "welcome mail sent to ada@example.com",
            }
            assert (await client.get("/signups/999/welcome")).status_code == 404
            assert (await client.post("/signups", json={})).status_code == 422
        await signups.queue.aclose()

    try:
        asyncio.run(scenario())
        assert workers[0].stop() == 0
    finally:
        for worker in workers:
            worker.close()
        signups.queue.close()
