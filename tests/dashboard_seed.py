"""Jobs in every state for the dashboard's tests, written straight into the tables (so no
worker is needed and the counts are known), and a running dashboard server."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg

HTML_TASK = "<script>alert(1)</script>"


@dataclass
class Seeded:
    """The ids made by :func:`seed`, by state."""

    ids: dict[str, list[str]] = field(default_factory=dict)

    def one(self, state: str) -> str:
        return self.ids[state][0]


def seed(db: psycopg.Connection[Any]) -> Seeded:
    """Queue "default": 3 ready, 1 scheduled, 1 retrying, 1 running; 2 succeeded, 1 failed,
    1 revoked, 1 ignored in the last hour. Queue "emails": 1 ready, named like markup."""
    out = Seeded()

    def live(
        state: str, task: str = "tests.taskapp.add", queue: str = "default", **cols: Any
    ) -> str:
        job_id = str(uuid.uuid4())
        db.execute(
            "INSERT INTO pgqueue.jobs (id, task_name, queue, args, state, run_at, worker_id,"
            " started_at)"
            " VALUES (%s, %s, %s, %s, %s, now() + make_interval(secs => %s), %s, %s)",
            (
                job_id,
                task,
                queue,
                psycopg.types.json.Jsonb(cols.get("args", [1, 2])),
                state,
                cols.get("delay", 0),
                cols.get("worker_id"),
                cols.get("started_at"),
            ),
        )
        out.ids.setdefault(state, []).append(job_id)
        return job_id

    def done(state: str, **cols: Any) -> str:
        job_id = str(uuid.uuid4())
        db.execute(
            "INSERT INTO pgqueue.results (task_id, task_name, queue, state, result, exc_type,"
            " exc_message, traceback, args, kwargs, worker, date_started, date_done, time_taken)"
            " VALUES (%s, 'tests.taskapp.add', 'default', %s, %s, %s, %s, %s, '[1, 2]', '{}',"
            " 'w1@host', now() - interval '1 second', now(), 1.0)",
            (
                job_id,
                state,
                psycopg.types.json.Jsonb(cols["result"]) if "result" in cols else None,
                cols.get("exc_type"),
                cols.get("exc_message"),
                cols.get("traceback"),
            ),
        )
        out.ids.setdefault(state, []).append(job_id)
        return job_id

    for _ in range(3):
        live("PENDING")
    live("PENDING", delay=3600)  # scheduled
    live("RETRY", delay=3600)  # waiting out its retry countdown
    live("STARTED", worker_id=str(uuid.uuid4()), started_at="now")
    done("SUCCESS", result={"html": "<b>bold</b>"})
    done("SUCCESS", result=3)
    done(
        "FAILURE",
        exc_type="ValueError",
        exc_message="<img src=x onerror=alert(2)>",
        traceback='Traceback (most recent call last):\n  File "x.py"\nValueError: boom',
    )
    done("REVOKED", exc_type="pgqueue.exceptions.TaskRevokedError", exc_message="revoked")
    done("IGNORED")
    out.ids["HTML"] = [live("PENDING", task=HTML_TASK, queue="emails")]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A dashboard served by uvicorn on a thread, on a free port of 127.0.0.1."""

    def __init__(self, asgi: Any) -> None:
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(asgi, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise AssertionError("the dashboard server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
