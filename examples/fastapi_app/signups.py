"""Sign-ups on FastAPI: a sign-up row and its welcome job commit together in one async
transaction, or not at all; another endpoint awaits the job's result without blocking the
event loop.

From this directory (``pip install -e '.[examples]'`` at the top brings FastAPI, and
``pip install uvicorn`` a server for it)::

    pgqueue worker -A signups:queue                    # one terminal: runs send_welcome
    uvicorn --factory signups:create_app               # another: http://127.0.0.1:8000

    curl -X POST localhost:8000/signups -H 'content-type: application/json' \\
         -d '{"email": "ada@example.com"}'             # 201: the sign-up and its job
    curl localhost:8000/signups/1/welcome              # awaits the job: its result
    curl -X POST localhost:8000/signups/fail -H 'content-type: application/json' \\
         -d '{"email": "bob@example.com"}'             # 500: neither sign-up nor job

Both processes use PGQUEUE_DSN, else database ``pgqueue`` on a local server, else on the
embedded one (``pip install 'pgqueue-tasks[embedded]'``): the same order as every pgqueue
command.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from pgqueue import PgQueue, states
from pgqueue.db import find_dsn
from pgqueue.exceptions import TimeoutError

queue = PgQueue("signups")

SCHEMA = """
CREATE TABLE IF NOT EXISTS signups (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email      text NOT NULL,
    welcome_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""


class Signup(BaseModel):
    email: str


class SignupFailed(Exception):
    """Something after the insert went wrong (here: on purpose, in /signups/fail)."""


@queue.task(name="signups.send_welcome")
async def send_welcome(signup_id: int) -> str:
    # The job is visible only once the sign-up committed, so the row is always there.
    async with await psycopg.AsyncConnection.connect(queue.dsn) as conn:
        cur = await conn.execute("SELECT email FROM signups WHERE id = %s", (signup_id,))
        row = await cur.fetchone()
    if row is None:
        raise LookupError(f"sign-up {signup_id} does not exist")
    return f"welcome mail sent to {row[0]}"


def create_app() -> FastAPI:
    """The web app (``uvicorn --factory signups:create_app`` finds this factory)."""
    if not os.environ.get("PGQUEUE_DSN"):
        found = find_dsn()
        print(f"signups: {found.note}")
        # The queue app (for results) and a worker started in the same shell read it.
        os.environ["PGQUEUE_DSN"] = found.dsn
    dsn = queue.dsn
    queue.migrate()  # an example's shortcut; deployments run `pgqueue migrate` once
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        yield
        await queue.aclose()  # pgqueue's own connection of the server's event loop

    api = FastAPI(lifespan=lifespan)

    async def sign_up(signup: Signup, fail_after_insert: bool) -> dict[str, Any]:
        welcome_id = str(uuid.uuid4())
        # Autocommit, so that queue.atransaction(conn) below is the one transaction.
        async with (
            await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn,
            queue.atransaction(conn),
        ):
            cur = await conn.execute(
                "INSERT INTO signups (email, welcome_id) VALUES (%s, %s) RETURNING id",
                (signup.email, welcome_id),
            )
            row = await cur.fetchone()
            assert row is not None
            # In the sign-up's transaction: the job exists exactly when the sign-up does.
            await send_welcome.aapply_async((row[0],), task_id=welcome_id)
            if fail_after_insert:
                raise SignupFailed(f"sign-up {row[0]} failed after its insert; rolled back")
        return {"signup_id": row[0], "welcome_id": welcome_id}

    @api.post("/signups", status_code=201)
    async def create_signup(signup: Signup) -> dict[str, Any]:
        return await sign_up(signup, fail_after_insert=False)

    @api.post("/signups/fail")
    async def create_signup_then_fail(signup: Signup) -> dict[str, Any]:
        return await sign_up(signup, fail_after_insert=True)

    @api.exception_handler(SignupFailed)
    async def signup_failed(request: Any, exc: SignupFailed) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=500)

    @api.get("/signups")
    async def list_signups() -> dict[str, Any]:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            cur = await conn.execute("SELECT id FROM signups ORDER BY id")
            return {"signups": [r[0] for r in await cur.fetchall()]}

    @api.get("/signups/{signup_id}/welcome")
    async def welcome(signup_id: int, timeout: float = 10) -> dict[str, Any]:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            cur = await conn.execute("SELECT welcome_id FROM signups WHERE id = %s", (signup_id,))
            row = await cur.fetchone()
        if row is None:
            raise HTTPException(404, f"no sign-up {signup_id}")
        result = queue.AsyncResult(str(row[0]))
        try:
            # Woken by the NOTIFY sent when the job finishes; the event loop serves other
            # requests meanwhile.
            value = await result.aget(timeout=timeout, propagate=False)
        except TimeoutError:
            raise HTTPException(504, f"welcome still {await result.astate()}") from None
        state = await result.astate()
        shown = value if state == states.SUCCESS else f"{type(value).__name__}: {value}"
        return {"id": result.id, "state": state, "result": shown}

    return api
