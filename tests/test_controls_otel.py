"""OpenTelemetry: an enqueue span and a run span, linked by the W3C trace context stored in
the job's options, recorded with the SDK's in-memory exporter; nothing without the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgqueue import Worker, tracing
from tests import taskapp
from tests.conftest import ROOT

trace = pytest.importorskip("opentelemetry.trace")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
export = pytest.importorskip("opentelemetry.sdk.trace.export")
in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")


@pytest.fixture
def spans() -> Iterator[Any]:
    """The spans pgqueue (and the test's tracer) finish during the test. Not the global
    provider: that one can be set only once per process, and would trace every later test."""
    exporter = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    tracing.use_tracer_provider(provider)
    exporter.provider = provider
    try:
        yield exporter
    finally:
        tracing.use_tracer_provider(None)


def run_worker_until(app: Any, results: list[Any]) -> None:
    """A worker in a thread of this process (so its spans reach our exporter) until each of
    ``results`` is ready."""
    w = Worker(app, pool="threads", concurrency=2)
    thread = threading.Thread(target=lambda: w.run(install_signals=False))
    thread.start()
    try:
        for r in results:
            r.get(timeout=60, propagate=False)
    finally:
        w.stop()
        thread.join(60)
    assert not thread.is_alive()


def named(spans: Any, name: str) -> list[Any]:
    return [s for s in spans.get_finished_spans() if s.name == name]


def test_the_run_span_continues_the_trace_of_the_enqueue(app, db, spans):
    tracer = spans.provider.get_tracer("test")
    with tracer.start_as_current_span("web request") as request:
        ok = taskapp.add.delay(2, 3)
    bad = taskapp.fail.delay("boom")  # outside any trace: a trace of its own
    # the context is in the job's options, where a DBA can see it
    (stored,) = db.execute(
        "SELECT options -> 'trace' ->> 'traceparent' FROM pgqueue.jobs WHERE id = %s", (ok.id,)
    ).fetchone()
    assert stored.split("-")[1] == format(request.get_span_context().trace_id, "032x")
    run_worker_until(app, [ok, bad])
    (publish,) = named(spans, "tests.taskapp.add publish")
    (process,) = named(spans, "tests.taskapp.add process")
    assert publish.kind == trace.SpanKind.PRODUCER and process.kind == trace.SpanKind.CONSUMER
    assert publish.parent.span_id == request.get_span_context().span_id
    assert process.context.trace_id == request.get_span_context().trace_id
    assert process.parent.span_id == publish.context.span_id
    assert process.attributes["messaging.message.id"] == ok.id
    assert process.attributes["pgqueue.state"] == "SUCCESS"
    assert publish.attributes["messaging.message.id"] == ok.id
    (failed,) = named(spans, "tests.taskapp.fail process")
    (failed_publish,) = named(spans, "tests.taskapp.fail publish")
    assert failed.parent.span_id == failed_publish.context.span_id
    assert failed.status.status_code == trace.StatusCode.ERROR
    assert "boom" in failed.status.description


def test_a_batch_has_one_enqueue_span_and_each_run_is_its_child(app, spans):
    results = app.enqueue_many([taskapp.add.s(i, i) for i in range(3)])
    run_worker_until(app, results)
    (publish,) = named(spans, "enqueue_many publish")
    runs = named(spans, "tests.taskapp.add process")
    assert len(runs) == 3
    assert {s.parent.span_id for s in runs} == {publish.context.span_id}


def test_a_workflow_has_one_send_span_and_every_step_continues_it(app, spans):
    from pgqueue import chain, group

    tracer = spans.provider.get_tracer("test")
    with tracer.start_as_current_span("web request") as request:
        # the second step and the chord's callback are enqueued later, by the database
        last = chain(
            taskapp.add.s(1, 1),
            taskapp.add.s(2),
            group(taskapp.add.si(i, i) for i in range(2)) | taskapp.add.si(0, 0),
        ).apply_async()
    run_worker_until(app, [last])
    (publish,) = named(spans, "chain publish")
    assert publish.parent.span_id == request.get_span_context().span_id
    runs = named(spans, "tests.taskapp.add process")
    assert len(runs) == 5
    assert {s.parent.span_id for s in runs} == {publish.context.span_id}


def test_a_forged_trace_context_is_ignored_and_the_job_runs(app, db, spans):
    forged = {"trace": {"traceparent": {"not": "a string"}, "tracestate": 7}}
    (job_id,) = db.execute(
        "SELECT pgqueue.enqueue('tests.taskapp.add', '[1, 1]', options => %s)::text",
        (json.dumps(forged),),
    ).fetchone()
    garbage = {"trace": {"traceparent": "00-zz-yy-01"}}
    (other_id,) = db.execute(
        "SELECT pgqueue.enqueue('tests.taskapp.add', '[2, 2]', options => %s)::text",
        (json.dumps(garbage),),
    ).fetchone()
    results = [app.AsyncResult(job_id), app.AsyncResult(other_id)]
    run_worker_until(app, results)
    assert [r.get(timeout=5) for r in results] == [2, 4]
    processed = named(spans, "tests.taskapp.add process")
    assert len(processed) == 2 and all(s.parent is None for s in processed)


def test_without_opentelemetry_nothing_is_imported_or_stored(dsn):
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from pgqueue import tracing\n"
        "from tests import taskapp\n"
        "r = taskapp.add.delay(1, 2)\n"
        "print(tracing.ENABLED, r.id)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert out[0] == "False"
    with psycopg.connect(dsn) as conn:
        (options,) = conn.execute(
            "SELECT options FROM pgqueue.jobs WHERE id = %s", (out[1],)
        ).fetchone()
    assert "trace" not in options
