"""Queues split across databases by name, as docs/scaling-out.md shows: one app per
database. Workers run ``-A tests.shardapp:orders`` or ``-A tests.shardapp:emails``; the
DSNs come from SHARD_ORDERS_DSN and SHARD_EMAILS_DSN."""

from __future__ import annotations

import os

from pgqueue import PgQueue
from pgqueue.result import AsyncResult


def where(tag: str) -> dict[str, object]:
    """Which database the worker running it serves, and which process it is."""
    return {"tag": tag, "pid": os.getpid()}


def make(queue: str, dsn: str | None) -> PgQueue:
    """An app whose database holds the queue ``queue`` (its default queue)."""
    app = PgQueue(queue, dsn=dsn, task_default_queue=queue, set_as_current=False)
    app.task(name="shard.where")(where)
    return app


orders = make("orders", os.environ.get("SHARD_ORDERS_DSN"))
emails = make("emails", os.environ.get("SHARD_EMAILS_DSN"))


class Router:
    """Sends each task to the database that holds its queue."""

    def __init__(self, *apps: PgQueue) -> None:
        self.apps = {app.conf.task_default_queue: app for app in apps}

    def send_task(self, name: str, args: tuple[object, ...], queue: str) -> AsyncResult:
        return self.apps[queue].send_task(name, args, queue=queue)
