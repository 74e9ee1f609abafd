"""A read-only Django admin of pgqueue's jobs, results and periodic tasks.

Imported by ``django.contrib.admin``'s autodiscovery, so only in projects that install the
admin. Nothing can be added, edited or deleted here; the few actions (revoke jobs, retry
failed results, enable or disable periodic tasks) are done by pgqueue's library, as the
command line and the dashboard do them, and need the model's change permission. Arguments
of sensitive tasks are hidden as the dashboard hides them (:class:`pgqueue.sensitive.Sensitive`:
``@app.task(sensitive=True)`` and PGQUEUE's ``hide_args`` patterns).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django.contrib import admin, messages
from django.db import DEFAULT_DB_ALIAS
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from ... import beat, ops
from ...exceptions import PgQueueError
from ...sensitive import Sensitive
from .config import get_app, hide_args, pgqueue_setting
from .models import Job, PeriodicTask, Result

HIDDEN = "hidden: this task is marked sensitive"


def _sensitive() -> Sensitive:
    app = get_app()
    # The web process may not have imported the tasks modules the worker imports: without
    # them, a task marked sensitive=True would not be known as one.
    app.import_task_modules()
    return Sensitive.of(app, hide_args())


def _pretty(value: Any) -> str:
    if value is None:
        return "-"
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, default=str))


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Viewing only, on the database jobs are written to (PGQUEUE's ``database``)."""

    show_full_result_count = False  # one count(*) of a big table per page is enough
    list_filter = ("state", "queue", "task_name")
    list_per_page = 50

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        alias = pgqueue_setting().get("database", DEFAULT_DB_ALIAS)
        found: QuerySet[Any] = super().get_queryset(request).using(alias)
        return found

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Who may run the actions: users with the model's change permission in Django's
        auth (a superuser), though no form changes anything."""
        meta = self.model._meta
        user: Any = request.user  # a User or AnonymousUser: both have has_perm
        return bool(user.has_perm(f"{meta.app_label}.change_{meta.model_name}"))

    @admin.display(description="arguments")
    def shown_args(self, obj: Any) -> str:
        return HIDDEN if _sensitive().hides(obj.task_name, obj.kwargs) else _pretty(obj.args)

    @admin.display(description="keyword arguments")
    def shown_kwargs(self, obj: Any) -> str:
        return HIDDEN if _sensitive().hides(obj.task_name, obj.kwargs) else _pretty(obj.kwargs)

    def report(self, request: HttpRequest, done: str, report: ops.Report) -> None:
        """One message for what was done, one per id that was not (and why)."""
        if report.done:
            self.message_user(request, f"{done}: {len(report.done)}", messages.SUCCESS)
        for target, why in report.skipped.items():
            # A word first: the admin capitalises a message's first letter (an id's too).
            self.message_user(request, f"Skipped {target}: {why}", messages.WARNING)


def _ids(queryset: QuerySet[Any]) -> list[str]:
    return [str(pk) for pk in queryset.values_list("pk", flat=True)]


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = (
        "id", "task_name", "queue", "state", "priority", "enqueued_at", "run_at",
        "started_at", "retries", "attempt", "worker_id",
    )  # fmt: skip
    search_fields = ("id", "task_name")
    date_hierarchy = "enqueued_at"
    fields = (
        "id", "task_name", "queue", "state", "shown_args", "shown_kwargs", "priority",
        "enqueued_at", "run_at", "expires_at", "claimed_at", "started_at", "retries",
        "max_retries", "attempt", "worker_id", "exc_type", "exc_message", "traceback",
    )  # fmt: skip
    readonly_fields = fields
    actions = ("revoke",)

    @admin.action(description="Revoke the selected jobs", permissions=["operate"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        # app.control.revoke: a running job is left to finish, as `pgqueue revoke` does
        self.report(request, "revoked", ops.revoke(get_app(), _ids(queryset)))


@admin.register(Result)
class ResultAdmin(ReadOnlyAdmin):
    list_display = (
        "task_id", "task_name", "queue", "state", "date_started", "date_done", "time_taken",
        "retries", "worker",
    )  # fmt: skip
    search_fields = ("task_id", "task_name")
    date_hierarchy = "date_done"
    fields = (
        "task_id", "task_name", "queue", "state", "shown_args", "shown_kwargs", "shown_result",
        "exc_type", "exc_message", "traceback", "retries", "worker", "date_started",
        "date_done", "time_taken", "expires_at",
    )  # fmt: skip
    readonly_fields = fields
    actions = ("retry",)

    @admin.display(description="result")
    def shown_result(self, obj: Result) -> str:
        return _pretty(obj.result)

    @admin.action(description="Retry the selected FAILURE results", permissions=["operate"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        # Queued again under the same id, as `pgqueue retry` does.
        self.report(request, "queued again", ops.retry_ids(get_app().connection(), _ids(queryset)))


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(ReadOnlyAdmin):
    list_display = (
        "name", "task_name", "schedule", "enabled", "next_run_at", "last_run_at",
        "total_run_count", "declared_in_code",
    )  # fmt: skip
    list_filter = ("enabled", "declared_in_code", "task_name")
    search_fields = ("name", "task_name")
    fields = (
        "name", "task_name", "schedule", "shown_args", "shown_kwargs", "queue", "enabled",
        "declared_in_code", "next_run_at", "last_run_at", "total_run_count", "start_at",
        "end_at",
    )  # fmt: skip
    readonly_fields = fields
    actions = ("enable", "disable")

    @admin.display(description="schedule")
    def schedule(self, obj: PeriodicTask) -> str:
        if obj.cron:
            return f"{obj.cron} ({obj.timezone})"
        if obj.interval_seconds:
            return f"every {obj.interval_seconds:g} s"
        return "once"

    @admin.action(description="Enable the selected periodic tasks", permissions=["operate"])
    def enable(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self._set_enabled(request, _ids(queryset), True)

    @admin.action(description="Disable the selected periodic tasks", permissions=["operate"])
    def disable(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self._set_enabled(request, _ids(queryset), False)

    def _set_enabled(self, request: HttpRequest, names: Iterable[str], enabled: bool) -> None:
        report = ops.Report()
        for name in names:
            try:
                beat.set_enabled(get_app().connection(), name, enabled)
                report.done.append(name)
            except PgQueueError as exc:  # removed meanwhile
                report.skipped[name] = str(exc)
        self.report(request, "enabled" if enabled else "disabled", report)
