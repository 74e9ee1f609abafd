"""Signals: the Signal class, and the task and worker signals sent by a real worker."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pgqueue import Worker, signals
from pgqueue.signals import Signal
from tests import taskapp
from tests.conftest import wait_for

# -- the Signal class ---------------------------------------------------------------------


def test_connect_as_decorator_and_send_with_keywords():
    sig = Signal("test")
    heard: list[dict[str, Any]] = []

    @sig.connect
    def receiver(**kwargs: Any) -> str:
        heard.append(kwargs)
        return "ok"

    responses = sig.send(sender="me", value=1)
    assert responses == [(receiver, "ok")]
    assert heard == [{"signal": sig, "sender": "me", "value": 1}]
    sig.connect(receiver)  # connecting again keeps one connection
    sig.send(sender="me")
    assert len(heard) == 2
    assert sig.disconnect(receiver) is True
    assert sig.send(sender="me") == []


def test_sender_filter_by_object_or_task_name():
    sig = Signal("test")
    by_name: list[Any] = []
    by_object: list[Any] = []
    sig.connect(lambda sender, **kw: by_name.append(sender), sender="tests.taskapp.add")
    sig.connect(lambda sender, **kw: by_object.append(sender), sender=taskapp.fail)
    sig.send(sender=taskapp.add)
    sig.send(sender=taskapp.fail)
    sig.send(sender="something else")
    assert by_name == [taskapp.add]
    assert by_object == [taskapp.fail]


def test_a_failing_receiver_is_logged_not_raised(caplog: pytest.LogCaptureFixture):
    sig = Signal("test")
    after: list[int] = []

    @sig.connect
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    sig.connect(lambda **kw: after.append(1))
    with caplog.at_level(logging.ERROR, logger="pgqueue.signals"):
        responses = sig.send(sender=None)
    assert isinstance(responses[0][1], RuntimeError)
    assert after == [1]  # the others still ran
    assert "signal test: receiver" in caplog.text
    assert "RuntimeError: receiver bug" in caplog.text


# -- sent by a worker -----------------------------------------------------------------------

NAMES = (
    "task_prerun",
    "task_postrun",
    "task_success",
    "task_failure",
    "task_retry",
    "worker_ready",
    "worker_shutdown",
)


@pytest.fixture
def heard() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Everything every pgqueue signal sends while the test runs, in order."""
    log: list[tuple[str, dict[str, Any]]] = []
    lock = threading.Lock()
    receivers: dict[str, Callable[..., None]] = {}
    for name in NAMES:

        def receiver(name: str = name, **kwargs: Any) -> None:
            with lock:
                log.append((name, kwargs))

        receivers[name] = receiver
        getattr(signals, name).connect(receiver)
    yield log
    for name, receiver in receivers.items():
        getattr(signals, name).disconnect(receiver)


@pytest.fixture(autouse=True)
def fresh_task_connections() -> Iterator[None]:
    """Tasks that record rows keep a connection per process; running them in this process,
    a connection kept by an earlier test would point at that test's dropped database."""

    def close_all() -> None:
        for conn in taskapp._conn.values():
            conn.close()
        taskapp._conn.clear()

    close_all()
    yield
    close_all()


def run_worker(app: Any, **options: Any) -> tuple[Worker, threading.Thread]:
    """A worker in a thread of this process, so receivers here hear the task signals."""
    w = Worker(app, pool=options.pop("pool", "threads"), concurrency=2, **options)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(w.run(install_signals=False)))
    thread.start()
    return w, thread


def stop(w: Worker, thread: threading.Thread) -> None:
    w.stop()
    thread.join(60)
    assert not thread.is_alive(), "the worker did not stop"


def of(heard: list[tuple[str, dict[str, Any]]], name: str, task_id: str | None = None) -> list:
    return [
        kw
        for n, kw in heard
        if n == name
        and (
            task_id is None
            or kw.get("task_id") == task_id
            or getattr(kw.get("request"), "id", None) == task_id
        )
    ]


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_worker_sends_task_and_worker_signals(app, heard, pool):
    ok = taskapp.add.delay(2, 3)
    bad = taskapp.fail.delay("boom")
    retried = taskapp.always_retry.delay("sig-retry")
    w, thread = run_worker(app, pool=pool)
    try:
        assert ok.get(timeout=60) == 5
        bad.get(timeout=60, propagate=False)
        retried.get(timeout=60, propagate=False)
    finally:
        stop(w, thread)

    names = [n for n, _ in heard]
    assert names[0] == "worker_ready" and names[-1] == "worker_shutdown"
    assert of(heard, "worker_ready")[0]["sender"] is w
    assert of(heard, "worker_shutdown")[0]["sender"] is w

    prerun = of(heard, "task_prerun", ok.id)
    assert len(prerun) == 1
    assert prerun[0]["sender"] is taskapp.add and prerun[0]["task"] is taskapp.add
    assert (prerun[0]["args"], prerun[0]["kwargs"]) == ([2, 3], {})
    postrun = of(heard, "task_postrun", ok.id)
    assert [(p["retval"], p["state"]) for p in postrun] == [(5, "SUCCESS")]
    successes = [kw for n, kw in heard if n == "task_success" and kw["sender"] is taskapp.add]
    assert [s["result"] for s in successes] == [5]
    # each signal of a job comes between its prerun and its postrun
    ok_events = [n for n, kw in heard if kw.get("task_id") == ok.id or kw.get("result") == 5]
    assert ok_events == ["task_prerun", "task_success", "task_postrun"]

    failures = of(heard, "task_failure", bad.id)
    assert len(failures) == 1
    failure = failures[0]
    assert isinstance(failure["exception"], ValueError)
    assert str(failure["exception"]) == "boom"
    assert failure["args"] == ["boom"]
    assert failure["traceback"] is not None
    assert "ValueError: boom" in failure["einfo"]
    assert [p["state"] for p in of(heard, "task_postrun", bad.id)] == ["FAILURE"]

    # always_retry retries twice (max_retries=2), then fails
    retries = of(heard, "task_retry", retried.id)
    assert len(retries) == 2
    assert all(isinstance(r["reason"], OSError) for r in retries)
    assert [r["request"].retries for r in retries] == [0, 1]
    assert [p["state"] for p in of(heard, "task_postrun", retried.id)] == [
        "RETRY",
        "RETRY",
        "FAILURE",
    ]
    assert len(of(heard, "task_prerun", retried.id)) == 3


def test_a_failing_receiver_never_fails_the_task(app, caplog):
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    signals.task_prerun.connect(broken, sender="tests.taskapp.add")
    signals.task_success.connect(broken)
    try:
        r = taskapp.add.delay(1, 2)
        w, thread = run_worker(app)
        try:
            assert r.get(timeout=60) == 3
        finally:
            stop(w, thread)
    finally:
        signals.task_prerun.disconnect(broken, sender="tests.taskapp.add")
        signals.task_success.disconnect(broken)
    errors = [rec for rec in caplog.records if rec.name == "pgqueue.signals"]
    assert {rec.getMessage().split(":")[0] for rec in errors} == {
        "signal task_prerun",
        "signal task_success",
    }


def test_request_is_current_during_task_signals(app):
    seen: list[Any] = []

    def look(**kwargs: Any) -> None:
        seen.append(taskapp.add.request.id)

    signals.task_prerun.connect(look)
    signals.task_postrun.connect(look)
    try:
        r = taskapp.add.delay(4, 4)
        w, thread = run_worker(app, pool="solo")
        try:
            assert r.get(timeout=60) == 8
            wait_for(lambda: len(seen) == 2, 30, "both signals")
        finally:
            stop(w, thread)
    finally:
        signals.task_prerun.disconnect(look)
        signals.task_postrun.disconnect(look)
    assert seen == [r.id, r.id]


def test_task_signals_fire_in_the_prefork_child_running_the_task(app, db, worker):
    # -A given again: the last one wins, so this worker loads the app with the receivers.
    w = worker("-A", "tests.signalapp:app", "-P", "prefork", "-c", "1")
    ok = taskapp.add.delay(1, 2)
    bad = taskapp.fail.delay("boom")
    assert ok.get(timeout=60) == 3
    bad.get(timeout=60, propagate=False)

    def seen(task_id: str) -> dict[str, set[int]]:
        rows = db.execute(
            "SELECT tag, pid FROM test_runs WHERE tag LIKE %s", (f"signal:%:{task_id}",)
        ).fetchall()
        found: dict[str, set[int]] = {}
        for tag, pid in rows:
            found.setdefault(tag.split(":")[1], set()).add(pid)
        return found

    def finished(task_id: str) -> dict[str, set[int]] | None:
        found = seen(task_id)
        return found if "task_postrun" in found else None

    ok_seen = wait_for(lambda: finished(ok.id), what="the signals of add")
    assert set(ok_seen) == {"task_prerun", "task_success", "task_postrun"}
    bad_seen = wait_for(lambda: finished(bad.id), what="the signals of fail")
    assert set(bad_seen) == {"task_prerun", "task_failure", "task_postrun"}
    pids = set().union(*ok_seen.values(), *bad_seen.values())
    assert len(pids) == 1 and w.pid not in pids  # one child, not the worker process
