"""The job document: pgqueue.job_document() builds it in SQL (for the claim and for the
hand-off trigger alike), Job reads it in Python, both by the same field names in the same
order (pgqueue.execution.FIELDS)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgqueue import queries
from pgqueue.execution import FIELDS, Job

UTC = dt.timezone.utc
RUN_AT = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
EXPIRES_AT = dt.datetime(9000, 1, 2, 3, 4, 5, 654321, tzinfo=UTC)


def insert_distinct_job(db: psycopg.Connection[Any]) -> str:
    """A job whose every field holds a value no other field of its type holds, so that
    reading a field from another's place shows."""
    job_id = str(uuid.uuid4())
    db.execute(
        "INSERT INTO pgqueue.jobs (id, seq, task_name, queue, args, kwargs, priority, run_at,"
        " expires_at, retries, max_retries, time_limit, soft_time_limit, options, attempt)"
        " OVERRIDING SYSTEM VALUE"
        " VALUES (%s, 1234, 'doc.task', 'doc-queue', '[\"an arg\"]', '{\"a\": 1}', 7, %s, %s,"
        " 2, 9, 12.5, 3.25, '{\"o\": true}', 4)",
        (job_id, RUN_AT, EXPIRES_AT),
    )
    return job_id


def claim(db: psycopg.Connection[Any], start: int) -> list[Any]:
    """The entries of the worker's own claim statement, for a worker of doc.task."""
    (document, _) = db.execute(
        queries.get("claim_jobs"),
        {
            "queues": ["doc-queue"],
            "tasks": ["doc.task"],
            "limit": 10,
            "start": start,
            "at_most_once": [],
            "worker_id": str(uuid.uuid4()),
            "synchronous_commit": "on",
        },
    ).fetchone()
    entries: list[Any] = json.loads(document)
    return entries


def test_the_sql_document_and_job_name_the_same_fields_in_the_same_order(db):
    job_id = insert_distinct_job(db)
    (document,) = db.execute(
        "SELECT pgqueue.job_document(j, true)::text FROM pgqueue.jobs AS j WHERE id = %s",
        (job_id,),
    ).fetchone()
    entry = json.loads(document)
    assert len(entry) == len(FIELDS), (entry, FIELDS)
    job = Job.from_claim(entry)
    with db.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM pgqueue.jobs WHERE id = %s", (job_id,)).fetchone()
    row["id"] = str(row["id"])
    derived = {"expired": False, "started": True}  # not columns: the builder works them out
    for name in FIELDS:
        expected = derived[name] if name in derived else row[name]
        assert getattr(job, name) == expected, name
    assert (job.run_at, job.expires_at) == (RUN_AT, EXPIRES_AT)


def test_a_claim_sends_the_document_the_hand_off_sends(db):
    job_id = insert_distinct_job(db)
    [entry] = claim(db, start=1)
    (handoff_entry,) = db.execute(
        # the row as the claim left it: what the hand-off trigger sends for a job it hands
        "SELECT pgqueue.job_document(j, true)::text FROM pgqueue.jobs AS j WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert entry == json.loads(handoff_entry)
    job = Job.from_claim(entry)
    assert (job.id, job.attempt, job.started, job.expired) == (job_id, 5, True, False)


def test_a_claim_names_an_expired_unstarted_job_as_such(db):
    job_id = insert_distinct_job(db)
    db.execute("UPDATE pgqueue.jobs SET expires_at = now() - interval '1 hour'")
    [entry] = claim(db, start=1)  # an expired job is never started
    job = Job.from_claim(entry)
    assert (job.id, job.expired, job.started) == (job_id, True, False)


def test_the_claim_inlines_the_document_builder(db):
    # Called as a function, the builder would cost the claim a function call per job; the
    # planner inlines a plain SQL expression instead, and then names no function at all.
    db.execute(queries.get("claim_settings"), {"synchronous_commit": "on"})
    plan = db.execute(
        "EXPLAIN (VERBOSE) " + queries.get("claim_jobs"),
        {
            "queues": ["default"],
            "tasks": ["doc.task"],
            "limit": 10,
            "start": 1,
            "at_most_once": [],
            "worker_id": str(uuid.uuid4()),
            "synchronous_commit": "on",
        },
    ).fetchall()
    text = "\n".join(line for (line,) in plan)
    assert "json_build_array" in text, text
    assert "job_document" not in text, text
