"""OpenTelemetry tracing, with ``pip install 'pgqueue[otel]'`` (or any opentelemetry-api).

An enqueue (``delay``, ``apply_async``, ``send_task``, ``enqueue_many`` and their async
forms) is a PRODUCER span
``<task> publish``; its W3C trace context (``traceparent``, ``tracestate``) is stored in the
job's options under ``"trace"``. The worker runs the task inside a CONSUMER span
``<task> process``, a child of that context: a web request's trace goes on into its tasks,
across processes and retries. Spans go wherever the application's tracer provider sends
them; with none configured, OpenTelemetry records nothing.

Without opentelemetry-api installed nothing is imported and each hook is one check of a
constant; with the API but no tracer provider set and no trace under way, an enqueue skips
the span (a check of about a microsecond), and a worker its runs' spans. The trace context
read back from a job is input like any other column: only a ``traceparent`` and
``tracestate`` string are given to the propagator, which checks their format.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # pgqueue[otel] not installed: the hooks below do nothing
    trace = None  # type: ignore[assignment]

ENABLED = trace is not None
# The key of a job's options holding the enqueue's trace context.
TRACE_OPTION = "trace"
_CARRIED = ("traceparent", "tracestate")
_NOTHING: AbstractContextManager[Any] = contextlib.nullcontext(None)
_provider: Any = None  # None: OpenTelemetry's global tracer provider


def use_tracer_provider(provider: Any) -> None:
    """Send pgqueue's spans to ``provider`` instead of the global tracer provider (None:
    the global one again)."""
    global _provider
    _provider = provider


def _tracer() -> Any:
    return trace.get_tracer("pgqueue", tracer_provider=_provider)


class Publish:
    """The enqueue span (``span``) and the trace context to store with its jobs (``carrier``,
    None when there is no trace to continue)."""

    def __init__(self, span: Any, carrier: dict[str, str] | None) -> None:
        self.span = span
        self.carrier = carrier

    def written(self, job_id: str) -> None:
        """Note the job written (for a single enqueue)."""
        self.span.set_attribute("messaging.message.id", job_id)


def publish(name: str) -> AbstractContextManager[Publish | None]:
    """The span of an enqueue: of task ``name``, or of a batch (``enqueue_many``). None
    without OTel."""
    return _publish(name) if ENABLED and _tracing() else _NOTHING


def _tracing() -> bool:
    """Whether an enqueue here can be traced: a tracer provider is set, or a trace is under
    way (the API alone, without one, would make a span that records nothing, at a cost of
    some microseconds per enqueue)."""
    return (
        _provider is not None
        or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        or trace.get_current_span().get_span_context().is_valid
    )


@contextlib.contextmanager
def _publish(name: str) -> Iterator[Publish]:
    with _tracer().start_as_current_span(
        f"{name} publish",
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "pgqueue", "pgqueue.task": name},
    ) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield Publish(span, carrier or None)


def process(job: Any) -> AbstractContextManager[Any]:
    """The span of a job's run, child of its enqueue's (None without OTel)."""
    # Without a provider, a run's span would record nothing: not made.
    recorded = ENABLED and (
        _provider is not None
        or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    )
    return _process(job) if recorded else _NOTHING


@contextlib.contextmanager
def _process(job: Any) -> Iterator[Any]:
    stored = job.options.get(TRACE_OPTION)
    carrier = (
        {k: stored[k] for k in _CARRIED if isinstance(stored.get(k), str)}
        if isinstance(stored, dict)
        else {}
    )
    parent = propagate.extract(carrier) if carrier else None
    with _tracer().start_as_current_span(
        f"{job.task_name} process",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "pgqueue",
            "messaging.message.id": job.id,
            "messaging.destination.name": job.queue,
            "pgqueue.task": job.task_name,
            "pgqueue.attempt": job.attempt,
            "pgqueue.retries": job.retries,
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def finished(span: Any, state: str, exc_type: str | None, exc_message: str | None) -> None:
    """Record a job's outcome on its run span (None: no span)."""
    if span is None:
        return
    span.set_attribute("pgqueue.state", state)
    if state == "FAILURE":
        span.set_status(Status(StatusCode.ERROR, f"{exc_type}: {exc_message}"))
