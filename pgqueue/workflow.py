"""A workflow's rows, worked out before anything is written: the jobs that start now, the
documents of the jobs that follow (inside the options of the job they follow), and the
workflows, members and chord counters a reader finds (sql/migrations/0007_workflows.sql).

canvas.py walks a chain, group or chord and asks a Plan for each task's document;
producer.send_workflow (aio.send_workflow from asyncio code) writes the Plan in one
statement.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import jobrows
from .groupresult import GroupResult
from .ids import new_job_id
from .result import AsyncResult
from .serialization import compact_json, dumps_jobs

if TYPE_CHECKING:
    from .app import PgQueue

Result = AsyncResult | GroupResult

# Options that set when a job starts: given to a workflow's apply_async, they apply to the
# jobs that start now only (as Celery's countdown delays a chain's first task only).
START_OPTIONS = ("countdown", "eta")

# What a workflow's apply_async may not take: ids are given per step (``sig.set(task_id=)``).
REFUSED_OPTIONS = ("task_id",)


@dataclass
class Compiled:
    """A part of a workflow worked out: the documents of its first jobs (to enqueue now, or
    when what it follows ends), its result, and the (task id, task name) of the jobs whose
    end is its end (one, unless it is a group)."""

    entries: list[dict[str, Any]]
    result: Result
    ends: list[tuple[str, str]]


@dataclass
class Plan:
    """The rows of one workflow. ``defaults``: apply_async's options, which every step
    takes unless it sets its own."""

    app: PgQueue
    defaults: dict[str, Any] = field(default_factory=dict)
    # the jobs that start now (enqueue_jobs documents)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    workflows: list[dict[str, Any]] = field(default_factory=list)
    members: list[dict[str, Any]] = field(default_factory=list)
    chords: list[dict[str, Any]] = field(default_factory=list)
    # the chain (if any) that the group or chord being worked out is a step of
    parent: str | None = None
    # the trace context of the send, which every job of the workflow continues
    trace: dict[str, str] | None = None

    def document(
        self,
        task: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any],
        *,
        immutable: bool,
        starts_now: bool,
        link: list[dict[str, Any]],
        link_error: list[dict[str, Any]],
        chain: list[dict[str, Any]],
        chord: str | None = None,
    ) -> dict[str, Any]:
        """One job's enqueue document, with what follows its end inside its options:
        ``link`` (run side by side), ``link_error``, ``chain`` (the steps after it, in
        order, each enqueued by the end of the one before) and its ``chord``."""
        defaults = {k: v for k, v in self.defaults.items() if starts_now or k not in START_OPTIONS}
        job_id, columns = jobrows.job_columns(
            self.app, task, args, kwargs, {**defaults, **options}, trace=self.trace
        )
        if "unique_key" in options:
            raise TypeError(
                f"{task}: a step of a chain, group or chord cannot take unique_key= (its "
                "steps are enqueued together, not deduplicated): enqueue it on its own"
            )
        # not deduplicated (see above): a key the task's unique= made is not kept
        columns.pop("unique_key", None)
        columns.pop("unique_until", None)
        own = columns["options"]
        # A workflow's step always stores its result: what follows it reads it there.
        own["ignore_result"] = False
        flow: dict[str, Any] = {}
        if link:
            flow["link"] = link
        if link_error:
            flow["link_error"] = link_error
        if chain:
            flow["chain"] = chain
        if chord is not None:
            flow["chord"] = chord
        if flow:
            own["workflow"] = flow
        doc = jobrows.job(job_id, args, kwargs, columns)
        jobrows.check_payloads([doc], dumps_jobs([doc]), self.app.conf.task_max_payload_size)
        if immutable:
            doc["immutable"] = True
        return doc

    @contextlib.contextmanager
    def detached(self) -> Iterator[None]:
        """Within: documents of calls of their own (link targets), which take none of the
        workflow's defaults and are part of no chain."""
        saved = self.defaults, self.parent
        self.defaults, self.parent = {}, None
        try:
            yield
        finally:
            self.defaults, self.parent = saved

    @staticmethod
    def sequence(follow: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The steps after a job as one flat list, when what follows it is one job: that job
        and the steps after it, taken out of its document. Flat, so that a chain of any
        length nests no deeper than a chain of two (a worker decodes, and a prefork pool
        pickles, a job's options: both have a nesting limit)."""
        if len(follow) != 1:
            return []
        (step,) = follow
        flow = step["options"].get("workflow", {})
        after: list[dict[str, Any]] = flow.pop("chain", [])
        if not flow:
            step["options"].pop("workflow", None)
        return [step, *after]

    def workflow(self, kind: str, members: list[tuple[str, str]], id: str | None = None) -> str:
        """Record a chain, group or chord and its members' (task id, task name) in order."""
        workflow_id = id or new_job_id()
        self.workflows.append({"id": workflow_id, "kind": kind, "parent_id": self.parent})
        self.members.extend(
            {"workflow_id": workflow_id, "position": i, "task_id": t, "task_name": n}
            for i, (t, n) in enumerate(members)
        )
        return workflow_id

    def chord(self, chord_id: str, size: int, callback: dict[str, Any]) -> None:
        """Record a chord's counter, with the document of the callback it enqueues."""
        self.chords.append(
            {
                "id": chord_id,
                "size": size,
                "callback_id": callback["id"],
                "callback": callback,
            }
        )

    def params(self) -> dict[str, str]:
        """enqueue_workflow's parameters."""
        # The documents were each encoded once already (document()): these cannot fail.
        return {
            "jobs": dumps_jobs(self.jobs) if self.jobs else "[]",
            "workflows": compact_json(self.workflows),
            "members": compact_json(self.members),
            "chords": dumps_jobs(self.chords) if self.chords else "[]",
        }


def check_defaults(kind: str, options: dict[str, Any]) -> None:
    """Refuse apply_async options a workflow cannot give every step."""
    refused = sorted(k for k in REFUSED_OPTIONS if options.get(k) is not None)
    if refused:
        raise TypeError(
            f"{kind}.apply_async() cannot take {', '.join(refused)}: each step has its own; "
            f"set it on a step (sig.set(task_id=...))"
        )


def as_list(value: Any) -> list[Any]:
    """A link option's value (None, one signature, or a list or tuple of them) as a list."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def single(result: Result) -> AsyncResult:
    """The result of a chain or task signature, as its type."""
    assert isinstance(result, AsyncResult)
    return result


def root(result: Result) -> Result:
    """The first result of a step's own parent links (the one to link to the step before)."""
    while result.parent is not None:
        result = result.parent
    return result
