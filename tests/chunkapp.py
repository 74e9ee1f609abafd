"""tests.taskapp's app with a task a map job must refuse and whose every run is seen (it
records a row in test_runs), for tests/test_canvas_chunks.py."""

from __future__ import annotations

from tests.taskapp import app, record

__all__ = ["app"]


@app.task(name="tests.limited_record", concurrency_limit=1)
def limited_record(tag: str) -> int:
    """One at a time, cluster-wide: jobs of another name (a map's) must not run it."""
    return int(record(tag))
