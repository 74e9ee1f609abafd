"""Tasks for tests/test_hostile.py; its workers run ``-A tests.hostileapp:app``.

Only worker processes import this module: the tests send its tasks by name
(``app.send_task("hostile.echo", ...)``), so that the test process's default app stays
tests.taskapp's. The DSN comes from PGQUEUE_DSN; HOSTILE_CONF (JSON of app.conf names)
adjusts the worker's settings.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from pgqueue import PgQueue

app = PgQueue("hostile")
if os.environ.get("HOSTILE_CONF"):
    app.conf.update(json.loads(os.environ["HOSTILE_CONF"]))

log = logging.getLogger("hostile")

# Shaped like SQL on purpose: every statement must carry these as values, never as text.
SQL_TASK = "hostile.x'); DROP TABLE pgqueue.jobs; --"
SQL_QUEUE = "q\"; DELETE FROM pgqueue.results; --'"


@app.task(name="hostile.echo")
def echo(*args: Any, **kwargs: Any) -> list[Any]:
    return [list(args), kwargs]


@app.task(name="hostile.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name=SQL_TASK, queue=SQL_QUEUE)
def sql_named(**kwargs: Any) -> dict[str, Any]:
    return kwargs


@app.task(name="hostile.big")
def big(n: int) -> str:
    return "x" * n


@app.task(name="hostile.retry_big", bind=True, max_retries=1)
def retry_big(self: Any, n: int) -> None:
    raise self.retry(args=["x" * n], countdown=0)


@app.task(name="hostile.fail_nul")
def fail_nul() -> None:
    raise ValueError("broken\x00glass")


@app.task(name="hostile.returns_nul")
def returns_nul() -> str:
    return "a\x00b"


@app.task(name="hostile.retry_nul", bind=True, max_retries=1)
def retry_nul(self: Any) -> str:
    if self.request.retries == 0:
        raise self.retry(exc=OSError("first\x00attempt"), countdown=0)
    return "second attempt"


@app.task(name="hostile.log_nul")
def log_nul() -> int:
    log.warning("a log line with a NUL: [\x00] and an escaped one: [\\u0000]")
    return 1


@app.task(name="hostile.returns_surrogate")
def returns_surrogate() -> str:
    return b"caf\xe9".decode("utf-8", "surrogateescape")


@app.task(name="hostile.fail_surrogate")
def fail_surrogate() -> None:
    name = b"caf\xe9".decode("utf-8", "surrogateescape")
    raise FileNotFoundError(f"no such file: {name}")
