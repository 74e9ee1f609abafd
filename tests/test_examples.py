"""Every example runs end to end against a real database."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT


def test_quickstart_runs_end_to_end(dsn):
    proc = subprocess.run(
        [sys.executable, "examples/quickstart/run.py"],
        cwd=ROOT,
        env={**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "add(2, 3) enqueued in a committed transaction -> 5" in proc.stdout
    assert "rolled-back transaction -> PENDING" in proc.stdout
    assert "divide(1, 0) -> FAILURE: ZeroDivisionError" in proc.stdout
    assert "sum of results 9900" in proc.stdout
