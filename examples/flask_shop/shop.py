"""A small shop on Flask: an order row and its confirmation job commit together, or not at all.

From this directory (``pip install flask``, or ``pip install -e '.[examples]'`` at the top)::

    pgqueue worker -A shop:queue          # one terminal: runs send_confirmation
    flask --app shop run                  # another: the web app on http://127.0.0.1:5000

    curl -X POST localhost:5000/orders -H 'content-type: application/json' \\
         -d '{"item": "tea", "quantity": 2}'           # 201: the order and its job
    curl localhost:5000/orders/1                       # the order, its confirmation SUCCESS
    curl -X POST localhost:5000/orders/fail -H 'content-type: application/json' \\
         -d '{"item": "cake", "quantity": 1}'          # 500: neither order nor job exists
    curl localhost:5000/orders                         # still only order 1

Both processes use PGQUEUE_DSN, else database ``pgqueue`` on a local server, else on the
embedded one (``pip install 'pgqueue-tasks[embedded]'``): the same order as every pgqueue command.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import psycopg
from flask import Flask, abort, jsonify, request

from pgqueue import PgQueue
from pgqueue.db import find_dsn

queue = PgQueue("shop")

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item            text NOT NULL,
    quantity        integer NOT NULL CHECK (quantity > 0),
    confirmation_id uuid NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
)
"""


class OrderFailed(Exception):
    """Something after the insert went wrong (here: on purpose, in /orders/fail)."""


@queue.task(name="shop.send_confirmation")
def send_confirmation(order_id: int) -> str:
    # The job is visible only once the order committed, so the row is always there.
    with psycopg.connect(queue.dsn) as conn:
        row = conn.execute(
            "SELECT item, quantity FROM orders WHERE id = %s", (order_id,)
        ).fetchone()
    if row is None:
        raise LookupError(f"order {order_id} does not exist")
    item, quantity = row
    return f"confirmation for order {order_id} ({quantity} x {item}) sent"


def create_app() -> Flask:
    """The web app (``flask --app shop run`` finds this factory)."""
    if not os.environ.get("PGQUEUE_DSN"):
        found = find_dsn()
        print(f"shop: {found.note}")
        # The queue app (for results) and the worker started in the same shell read it.
        os.environ["PGQUEUE_DSN"] = found.dsn
    dsn = queue.dsn
    queue.migrate()  # an example's shortcut; deployments run `pgqueue migrate` once
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)

    app = Flask(__name__)

    def connect() -> Any:
        # Autocommit, so that queue.transaction(conn) below is the one transaction.
        return psycopg.connect(dsn, autocommit=True)

    def place_order(fail_after_insert: bool) -> tuple[int, str]:
        body = request.get_json(silent=True) or {}
        item, quantity = body.get("item"), body.get("quantity")
        if not isinstance(item, str) or not isinstance(quantity, int) or quantity < 1:
            abort(400, "give an item (text) and a quantity (a positive integer)")
        confirmation_id = str(uuid.uuid4())
        with connect() as conn, queue.transaction(conn):
            row = conn.execute(
                "INSERT INTO orders (item, quantity, confirmation_id)"
                " VALUES (%s, %s, %s) RETURNING id",
                (item, quantity, confirmation_id),
            ).fetchone()
            order_id = int(row[0])
            # In the order's transaction: the job exists exactly when the order does.
            send_confirmation.apply_async((order_id,), task_id=confirmation_id)
            if fail_after_insert:
                raise OrderFailed(f"order {order_id} failed after its insert; rolled back")
        return order_id, confirmation_id

    @app.post("/orders")
    def create_order() -> Any:
        order_id, confirmation_id = place_order(fail_after_insert=False)
        return jsonify(order_id=order_id, confirmation_id=confirmation_id), 201

    @app.post("/orders/fail")
    def create_order_then_fail() -> Any:
        place_order(fail_after_insert=True)
        return jsonify(error="unreachable"), 500

    @app.errorhandler(OrderFailed)
    def order_failed(exc: OrderFailed) -> Any:
        return jsonify(error=str(exc)), 500

    @app.get("/orders")
    def list_orders() -> Any:
        with connect() as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM orders ORDER BY id")]
        return jsonify(orders=ids)

    @app.get("/orders/<int:order_id>")
    def show_order(order_id: int) -> Any:
        with connect() as conn:
            row = conn.execute(
                "SELECT item, quantity, confirmation_id FROM orders WHERE id = %s", (order_id,)
            ).fetchone()
        if row is None:
            abort(404)
        item, quantity, confirmation_id = row
        result = queue.AsyncResult(str(confirmation_id))
        confirmation = {"id": result.id, "state": result.state, "result": None}
        if result.successful():
            confirmation["result"] = result.result
        return jsonify(id=order_id, item=item, quantity=quantity, confirmation=confirmation)

    return app
