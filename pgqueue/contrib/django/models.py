"""pgqueue's tables as Django models, for reading (the admin): ``pgqueue.jobs`` (queued,
scheduled and running jobs), ``pgqueue.results`` (finished ones) and
``pgqueue.periodic_tasks`` (beat's schedule).

Unmanaged: pgqueue's SQL migrations own these tables, and Django never creates, alters nor
drops them (their Django migration, 0005_admin_models, records them and runs no SQL). Only
the columns worth showing are here. Changes go through pgqueue's library (``pgqueue.ops``,
``app.control``, ``pgqueue.beat``), never through ``save()``: the tables have triggers,
invariants and notifications the ORM knows nothing of.
"""

from __future__ import annotations

from django.db import models


class Job(models.Model):
    """A job not yet finished: PENDING, RETRY (waiting for its next attempt) or STARTED."""

    id = models.UUIDField(primary_key=True)
    task_name = models.TextField()
    queue = models.TextField()
    state = models.TextField()
    args = models.JSONField()
    kwargs = models.JSONField()
    priority = models.IntegerField()
    enqueued_at = models.DateTimeField()
    run_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True)
    claimed_at = models.DateTimeField(null=True)
    started_at = models.DateTimeField(null=True)
    retries = models.IntegerField()
    max_retries = models.IntegerField(null=True)
    attempt = models.IntegerField()
    worker_id = models.UUIDField(null=True)
    exc_type = models.TextField(null=True)
    exc_message = models.TextField(null=True)
    traceback = models.TextField(null=True)

    class Meta:
        managed = False
        # Django quotes db_table whole: this comes out as "pgqueue"."jobs".
        db_table = 'pgqueue"."jobs'
        ordering = ["-enqueued_at"]

    def __str__(self) -> str:
        return f"{self.task_name} {self.id}"


class Result(models.Model):
    """A finished job: SUCCESS, FAILURE, REVOKED or IGNORED, kept until it expires."""

    task_id = models.UUIDField(primary_key=True)
    task_name = models.TextField()
    queue = models.TextField()
    state = models.TextField()
    result = models.JSONField(null=True)
    exc_type = models.TextField(null=True)
    exc_message = models.TextField(null=True)
    traceback = models.TextField(null=True)
    retries = models.IntegerField()
    args = models.JSONField(null=True)
    kwargs = models.JSONField(null=True)
    worker = models.TextField(null=True)
    date_started = models.DateTimeField(null=True)
    date_done = models.DateTimeField()
    time_taken = models.FloatField(null=True)
    expires_at = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = 'pgqueue"."results'
        ordering = ["-date_done"]

    def __str__(self) -> str:
        return f"{self.task_name} {self.task_id}"


class PeriodicTask(models.Model):
    """One entry of beat's schedule (declared in code, or added with ``pgqueue beat add``)."""

    name = models.TextField(primary_key=True)
    task_name = models.TextField()
    cron = models.TextField(null=True)
    interval_seconds = models.FloatField(null=True)
    timezone = models.TextField()
    args = models.JSONField()
    kwargs = models.JSONField()
    queue = models.TextField(null=True)
    enabled = models.BooleanField()
    declared_in_code = models.BooleanField()
    next_run_at = models.DateTimeField(null=True)
    last_run_at = models.DateTimeField(null=True)
    total_run_count = models.BigIntegerField()
    start_at = models.DateTimeField(null=True)
    end_at = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = 'pgqueue"."periodic_tasks'
        ordering = ["name"]

    def __str__(self) -> str:
        return str(self.name)
