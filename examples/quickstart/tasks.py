"""The quickstart's tasks. A worker runs them with: pgqueue worker -A tasks:app"""

import os

from pgqueue import PgQueue

app = PgQueue("quickstart", dsn=os.environ.get("PGQUEUE_DSN"))


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="emails.send", queue="emails")
def send_welcome(address: str) -> str:
    return f"welcome mail sent to {address}"


@app.task
def divide(x: float, y: float) -> float:
    return x / y
