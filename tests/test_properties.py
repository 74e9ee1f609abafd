"""Property-based tests (hypothesis) against the real database: what pgqueue accepts comes
back unchanged, and jobs are claimed in priority, run_at, enqueue order.

Each test function has one database; its examples share it and empty the tables first.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgqueue import queries
from pgqueue.exceptions import EncodeError
from pgqueue.execution import Job
from pgqueue.task import Signature

EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text as Python holds it, less surrogates (no UTF-8 for them: refused, tested elsewhere);
# NUL is left in, to be refused.
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=16,
)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1e16 must not come back as an int)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def has_nul(value: Any) -> bool:
    return "\\u0000" in json.dumps(value)


def claim(db: psycopg.Connection[Any], limit: int, queues: list[str], tasks: list[str]) -> str:
    """The worker's own claim statement, for a worker that never runs anything."""
    (document, _) = db.execute(
        queries.get("claim_jobs"),
        {
            "queues": queues,
            "tasks": tasks,
            "limit": limit,
            "start": 0,
            "at_most_once": [],
            "worker_id": str(uuid.uuid4()),
            "synchronous_commit": "on",
        },
    ).fetchone()
    return str(document)


def empty(db: psycopg.Connection[Any]) -> None:
    db.execute("TRUNCATE pgqueue.jobs, pgqueue.results")


@EXAMPLES
@given(args=st.lists(values, max_size=4), kwargs=st.dictionaries(text, values, max_size=4))
def test_accepted_arguments_come_back_unchanged_through_the_claim(app, db, args, kwargs):
    for bulk in (False, True):
        empty(db)
        try:
            if bulk:  # COPY, on pgqueue's own connection
                app.enqueue_many([Signature("prop.echo", args, kwargs)])
            else:
                app.send_task("prop.echo", args, kwargs)
        except EncodeError as exc:
            assert "NUL character" in str(exc)
            assert has_nul(args) or has_nul(kwargs)
            assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()[0] == 0
            continue
        assert not (has_nul(args) or has_nul(kwargs))
        # decoded as the worker decodes a claim
        [job] = [
            Job.from_claim(row) for row in json.loads(claim(db, 10, ["default"], ["prop.echo"]))
        ]
        assert same(job.args, args), (job.args, args)
        assert same(job.kwargs, kwargs), (job.kwargs, kwargs)
        assert job.expires_at is None and job.time_limit is None


job_specs = st.lists(
    st.tuples(
        st.integers(min_value=-2, max_value=2),  # priority
        st.sampled_from([None, 1, 60, 3600]),  # run_at: now, or that many seconds ago
        st.sampled_from(["a", "b"]),  # queue
    ),
    min_size=1,
    max_size=30,
)


@EXAMPLES
@given(
    batches=st.lists(st.tuples(job_specs, st.booleans()), min_size=1, max_size=3),
    limits=st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=5),
)
def test_claims_take_jobs_by_priority_then_run_at_then_enqueue_order(app, db, batches, limits):
    empty(db)
    now = dt.datetime.now(dt.timezone.utc)
    for specs, bulk in batches:
        sigs = [
            Signature("prop.order", (i,)).set(
                priority=priority,
                queue=queue,
                **({"eta": now - dt.timedelta(seconds=ago)} if ago is not None else {}),
            )
            for i, (priority, ago, queue) in enumerate(specs)
        ]
        if bulk:
            app.enqueue_many(sigs)
        else:
            for s in sigs:
                app.send_task(s.task, s.args, **s.options)
    rows = db.execute("SELECT id::text, priority, run_at, seq FROM pgqueue.jobs").fetchall()
    expected = [r[0] for r in sorted(rows, key=lambda r: (-r[1], r[2], r[3]))]
    claimed: list[str] = []
    turn = 0
    while True:
        document = claim(db, limits[turn % len(limits)], ["a", "b"], ["prop.order"])
        jobs = [Job.from_claim(row) for row in json.loads(document)]
        if not jobs:
            break
        claimed += [j.id for j in jobs]
        turn += 1
    assert claimed == expected
