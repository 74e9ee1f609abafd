"""Tasks used by the test suite; workers in tests run ``-A tests.taskapp:app``.

The DSN comes from PGQUEUE_DSN, which each test sets to its own fresh database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import time
from typing import Any

import psycopg

from pgqueue import PgQueue

app = PgQueue("tests")

_conn: dict[int, Any] = {}


def db() -> Any:
    """A connection of this process (prefork child or thread) for tasks that record things."""
    key = os.getpid()
    if key not in _conn:
        _conn[key] = psycopg.connect(os.environ["PGQUEUE_DSN"], autocommit=True)
    return _conn[key]


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="tests.record")
def record(tag: str) -> int:
    """Append a row to test_runs and return the time it ran, for order and once-only checks."""
    db().execute("INSERT INTO test_runs (tag, pid) VALUES (%s, %s)", (tag, os.getpid()))
    return time.time_ns()


@app.task
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task
def fail(message: str) -> None:
    raise ValueError(message)


@app.task
def returns_set() -> Any:
    return {1, 2}


@app.task
def returns_nul() -> str:
    return "a\x00b"


@app.task
def fail_with_nul() -> None:
    raise ValueError("broken\x00glass")


@app.task
async def async_add(x: int, y: int) -> int:
    await asyncio.sleep(0.01)
    return x + y


@app.task(queue="emails", name="emails.send")
def send_email(to: str) -> str:
    return f"sent to {to}"


@app.task
def now_ns() -> int:
    return time.time_ns()


# -- queue controls (tests/test_controls_*.py) ------------------------------------------


@app.task(unique=("customer_id",))
def sync_customer(customer_id: int, full: bool = False) -> int:
    """At most one queued sync per customer."""
    return customer_id


@app.task(concurrency_limit=2)
def two_at_a_time(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(concurrency_limit=1, concurrency_key="customer_id")
def sync_account(customer_id: int, seconds: float = 0.0) -> int:
    """At most one sync per customer at a time."""
    time.sleep(seconds)
    return customer_id


@app.task(rate_limit="20/s")
def rated(i: int) -> int:
    return i


@app.task(unique=lambda order, seconds=0.0: f"ship:{order}", unique_until="finished")
def ship(order: int, seconds: float = 0.0) -> int:
    """One shipment per order while one is queued or running."""
    time.sleep(seconds)
    return order


# -- lifecycle ------------------------------------------------------------------------

# Tests adjust the worker's settings through this variable (JSON of app.conf names).
if os.environ.get("PGQUEUE_TEST_CONF"):
    import json

    app.conf.update(json.loads(os.environ["PGQUEUE_TEST_CONF"]))


def attempts(tag: str) -> int:
    return int(db().execute("SELECT count(*) FROM test_runs WHERE tag = %s", (tag,)).fetchone()[0])


@app.task(bind=True, max_retries=5)
def flaky(self: Any, tag: str, failures: int) -> int:
    """Fails ``failures`` times, retrying after 0.1 s, then succeeds with the retry count."""
    record(tag)
    if self.request.retries < failures:
        raise self.retry(exc=OSError(f"attempt {self.request.retries}"), countdown=0.1)
    return int(self.request.retries)


@app.task(bind=True, max_retries=2)
def always_retry(self: Any, tag: str, with_exc: bool = True, delay: float = 0.1) -> None:
    record(tag)
    if with_exc:
        raise self.retry(exc=OSError("disk on fire"), countdown=delay)
    raise self.retry(countdown=delay)


@app.task(bind=True, max_retries=1)
def retry_at(self: Any, tag: str, eta: str) -> str | None:
    """Retries once with ``eta`` (an ISO time); returns the eta its retry ran with."""
    record(tag)
    if self.request.retries == 0:
        raise self.retry(eta=dt.datetime.fromisoformat(eta))
    return self.request.eta.isoformat() if self.request.eta else None


@app.task(bind=True, max_retries=5)
def retry_with_new_args(self: Any, tag: str, step: int, note: str = "") -> dict[str, Any]:
    """Retries with new args (kwargs kept), then with new kwargs (args kept), then returns
    what its last request carried."""
    record(f"{tag}:{step}:{note}")
    if step == 0:
        raise self.retry(args=(tag, 1), countdown=0.05)
    if note != "changed":
        raise self.retry(kwargs={"note": "changed"}, countdown=0.05)
    return {
        "args": self.request.args,
        "kwargs": self.request.kwargs,
        "retries": self.request.retries,
    }


@app.task(bind=True)
def retry_elsewhere(self: Any) -> None:
    raise self.retry(queue="elsewhere", countdown=0.05)


@app.task(
    autoretry_for=(OSError,),
    retry_backoff=1,
    retry_backoff_max=1,
    retry_jitter=True,
    max_retries=6,
)
def jittered(tag: str) -> None:
    record(tag)
    raise OSError("jittered")


@app.task(
    bind=True,
    autoretry_for=(OSError,),
    retry_kwargs={"max_retries": 2, "countdown": 0.1},
    max_retries=5,
)
def auto_retry_kwargs(self: Any, tag: str, failures: int) -> int:
    """Fails ``failures`` times; retry_kwargs (not the task's max_retries, nor its 180 s
    default delay) decide how often and how soon it retries."""
    record(tag)
    if self.request.retries < failures:
        raise OSError(f"attempt {self.request.retries}")
    return int(self.request.retries)


@app.task(
    autoretry_for=(OSError,),
    retry_backoff=0.3,
    retry_backoff_max=0.7,
    retry_jitter=False,
    max_retries=3,
)
def auto_backoff(tag: str) -> None:
    record(tag)
    raise OSError("still broken")


@app.task(bind=True, max_retries=None)
def forever(self: Any, tag: str, until: int) -> int:
    record(tag)
    if self.request.retries < until:
        raise self.retry(countdown=0.05)
    return int(self.request.retries)


@app.task(bind=True)
def request_info(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    r = self.request
    return {
        "id": r.id,
        "retries": r.retries,
        "args": r.args,
        "kwargs": r.kwargs,
        "hostname": r.hostname,
        "eta": r.eta.isoformat() if r.eta else None,
        "expires": r.expires.isoformat() if r.expires else None,
    }


@app.task
def ignored() -> None:
    from pgqueue.exceptions import Ignore

    raise Ignore()


@app.task(soft_time_limit=0.5)
def soft_limited() -> str:
    from pgqueue.exceptions import SoftTimeLimitExceeded

    try:
        # short sleeps: the threads pool can only interrupt Python code between C calls
        for _ in range(300):
            time.sleep(0.1)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "not interrupted"


@app.task(soft_time_limit=0.3)
def soft_then_linger(seconds: float) -> str:
    """Catches its soft limit and carries on: the worker must not spin meanwhile."""
    from pgqueue.exceptions import SoftTimeLimitExceeded

    try:
        time.sleep(30)
    except SoftTimeLimitExceeded:
        time.sleep(seconds)
    return "lingered"


@app.task(time_limit=1)
def hard_limited() -> str:
    time.sleep(30)
    return "not stopped"


@app.task(
    time_limit=1,
    autoretry_for=(Exception,),
    max_retries=1,
    retry_backoff=False,
    default_retry_delay=0.1,
)
def hard_limited_retried(tag: str) -> str:
    record(tag)
    time.sleep(30)
    return "not stopped"


@app.task(
    time_limit=1,
    autoretry_for=(Exception,),
    max_retries=2,
    retry_kwargs={"max_retries": 1},
    retry_backoff=False,
    default_retry_delay=0.1,
)
def hard_limited_retry_kwargs(tag: str) -> str:
    record(tag)
    time.sleep(30)
    return "not stopped"


@app.task
def pid() -> int:
    return os.getpid()


@app.task
def slow_record(tag: str, seconds: float) -> dict[str, int]:
    """Records its start, sleeps, and says which process ran it."""
    record(tag)
    time.sleep(seconds)
    return {"pid": os.getpid(), "ppid": os.getppid()}


@app.task
def hold(tag: str, release: str) -> str:
    """Records its start, then runs until a test_runs row tagged ``release`` appears."""
    record(tag)
    deadline = time.monotonic() + 60
    while attempts(release) == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"nobody released {release!r}")
        time.sleep(0.05)
    return "released"


@app.task(acks_late=False)
def at_most_once(tag: str, seconds: float) -> None:
    record(tag)
    time.sleep(seconds)


@app.task
def crash_child() -> None:
    os._exit(3)


@app.task(reject_on_worker_lost=True)
def killed_once(tag: str) -> int:
    """Its first run is killed like the OOM killer would; the next one succeeds."""
    record(tag)
    (runs,) = db().execute("SELECT count(*) FROM test_runs WHERE tag = %s", (tag,)).fetchone()
    if runs == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return int(runs)


@app.task
def allocate(megabytes: int) -> int:
    block = bytearray(megabytes * 1024 * 1024)
    return len(block)


# -- the asyncio pool ---------------------------------------------------------------------


@app.task
async def nap(seconds: float) -> list[float]:
    """Sleeps on the event loop; returns when it started and ended (time.time())."""
    started = time.time()
    await asyncio.sleep(seconds)
    return [started, time.time()]


@app.task(bind=True)
async def async_request_id(self: Any, seconds: float) -> str | None:
    """The request's id after a sleep on a loop shared with other jobs."""
    await asyncio.sleep(seconds)
    return self.request.id


@app.task(soft_time_limit=0.5)
async def async_soft_limited(catch: bool) -> str:
    from pgqueue.exceptions import SoftTimeLimitExceeded

    try:
        await asyncio.sleep(30)
    except SoftTimeLimitExceeded:
        if not catch:
            raise
        await asyncio.sleep(0.05)  # the cleanup may await
        return "cleaned up"
    return "not interrupted"


async def _child(tag: str) -> None:
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        record(f"{tag}:cancelled")
        raise


@app.task(soft_time_limit=0.5)
async def soft_limited_fan_out(tag: str) -> None:
    """Waits on work it started itself (wait_for wraps it in a task of its own, as gather
    and TaskGroup do): its soft limit must cancel that work too."""
    await asyncio.wait_for(_child(tag), 30)


@app.task(time_limit=1)
async def blocks_the_loop(seconds: float) -> str:
    time.sleep(seconds)  # blocking code in a coroutine: the whole loop waits
    return "blocked"


@app.task(bind=True, max_retries=3)
async def async_flaky(self: Any, failures: int) -> int:
    await asyncio.sleep(0.01)
    if self.request.retries < failures:
        raise self.retry(exc=OSError(f"attempt {self.request.retries}"), countdown=0.1)
    return int(self.request.retries)


@app.task(autoretry_for=(OSError,), max_retries=2, retry_kwargs={"countdown": 0.1})
async def async_autoretried() -> None:
    await asyncio.sleep(0.01)
    raise OSError("still down")


@app.task
async def cancellable(tag: str) -> str:
    """Records that it started, then that it was cancelled, if it is."""
    record(f"{tag}:started")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        record(f"{tag}:cancelled")
        raise
    return "not cancelled"


@app.task
def thread_name(seconds: float = 0) -> str:
    import threading

    time.sleep(seconds)
    return threading.current_thread().name


# -- canvas (tests/test_canvas*.py) ------------------------------------------------------


@app.task(name="tests.mul")
def mul(x: int, y: int) -> int:
    return x * y


@app.task(name="tests.tsum")
def tsum(values: list[int], tag: str = "") -> int:
    """A chord callback: records its run (once-only checks) and adds its members' results."""
    if tag:
        record(tag)
    return sum(values)


@app.task(name="tests.collect")
def collect(*args: Any) -> list[Any]:
    return list(args)


@app.task(name="tests.errback")
def errback(*args: Any) -> list[Any]:
    """A link_error target: records what it was given."""
    record("errback:" + ",".join(str(a) for a in args))
    return list(args)


@app.task(name="tests.gate")
def gate(x: int, tag: str) -> int:
    """A chain step that fails until the test opens its gate (a row ``open:<tag>``)."""
    record(tag)
    if not attempts(f"open:{tag}"):
        raise ValueError(f"gate {tag} is closed")
    return x * 10


@app.task(name="tests.slow_add", acks_late=True)
def slow_add(x: int, y: int, seconds: float) -> int:
    time.sleep(seconds)
    return x + y


# -- the dashboard ---------------------------------------------------------------------


@app.task
def fails_once(tag: str) -> str:
    """Fails on its first run for ``tag``, succeeds on any later one (a retry from the
    dashboard then shows SUCCESS)."""
    record(tag)
    if attempts(tag) == 1:
        raise ValueError(f"first attempt of {tag}")
    return f"{tag} done"


@app.task(sensitive=True)
def charge_card(card_number: str, amount: int) -> str:
    """A task whose arguments the dashboard must not show."""
    return f"charged {amount}"
