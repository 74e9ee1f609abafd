"""Celery's map, starmap and chunks: many calls of one task in few jobs.

``add.map(items)`` and ``add.starmap(items)`` are one job of a built-in task
(``pgqueue.map``, ``pgqueue.starmap``) that calls ``add``'s function once per item, in
order, in the worker that claimed it, and ends with the list of results.
``add.chunks(items, n)`` is a group of starmaps of ``n`` items each; it is worked out when
it is sent, so no worker ever sees a ``chunks`` job.

A map job runs another task's function, so every check is made twice: when the signature
is made (a TypeError for the caller) and again in the worker before any item runs, since
anyone who can enqueue can write the built-in's arguments by hand (docs/workflows.md).
This module is the sending side; mapjobs.py runs the built-in tasks in the worker.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from .canvas import Signature
from .canvas import group as _group

if TYPE_CHECKING:
    from .task import Task

MAP = "pgqueue.map"
STARMAP = "pgqueue.starmap"
BUILTINS = (MAP, STARMAP)


def refusal(task: Task) -> str | None:
    """Why ``task`` cannot run inside a map job (None: it can). Each of these is a per-task
    rule the map job, one job of another task, would silently bypass."""
    controls = task.controls
    reasons = []
    if task.name in BUILTINS:
        reasons.append("it is itself a built-in map task")
    if controls.concurrency_limit is not None:
        reasons.append("its concurrency_limit counts jobs of its own name, not calls in a map")
    if controls.rate_limit is not None:
        reasons.append("its rate_limit counts jobs of its own name, not calls in a map")
    if controls.unique is not None:
        reasons.append("its unique= key is held by jobs of its own name, not calls in a map")
    if task.sensitive:
        reasons.append("it is sensitive=True: the dashboard would show its arguments as the map's")
    if inspect.iscoroutinefunction(task.run):
        reasons.append("it is async def: a map calls the function synchronously")
    if not reasons:
        return None
    return (
        f"{task.name} cannot run in a map, starmap or chunks job: {'; '.join(reasons)}. "
        "Send its calls as jobs of their own (task.delay, app.enqueue_many, or a group)"
    )


def check(task: Task) -> None:
    """Raise TypeError naming ``task`` and why, if it cannot run inside a map job."""
    reason = refusal(task)
    if reason is not None:
        raise TypeError(reason)


class xmap(Signature):
    """``task.map(items)``: one job calling ``task(item)`` for each item, in order; its
    result is the list of results. Takes the wrapped task's queue (its route, else its
    ``queue=``), priority, time limits, ``acks_late`` and ``expires``; options given here or
    to ``apply_async`` win, as for the task itself. Immutable: in a chain it takes no result
    from the step before (as in Celery)."""

    builtin = MAP

    def __init__(self, task: Task, it: Iterable[Any], **options: Any) -> None:
        check(task)
        items = [self._item(task, item) for item in it]
        super().__init__(
            self.builtin,
            (),
            {"task": task.name, "it": items},
            {**job_options(task), **options},
            app=task.app,
            immutable=True,
        )

    @staticmethod
    def _item(task: Task, item: Any) -> Any:
        return item


class xstarmap(xmap):
    """``task.starmap(items)``: as ``map``, calling ``task(*item)``; each item is a list or
    tuple of arguments."""

    builtin = STARMAP

    @staticmethod
    def _item(task: Task, item: Any) -> Any:
        if not isinstance(item, list | tuple):
            raise TypeError(
                f"{task.name}.starmap()/chunks(): each item is a list or tuple of arguments, "
                f"got {type(item).__name__} {item!r}"
            )
        return list(item)


class chunks(_group):
    """``task.chunks(items, n)``: the items split into parts of ``n`` (the last may be
    shorter), each a starmap job, sent side by side as a group. ``apply_async()`` returns
    a GroupResult whose ``get()`` is a list of lists; ``chunks | callback`` is a chord;
    ``.group()`` is the group itself."""

    def __init__(self, task: Task, it: Iterable[Any], n: int, **options: Any) -> None:
        check(task)  # here too: no items make no starmap to check
        if type(n) is not int or n < 1:
            raise ValueError(f"{task.name}.chunks(items, n): n is a positive int, got {n!r}")
        items = list(it)
        parts = [xstarmap(task, items[i : i + n], **options) for i in range(0, len(items), n)]
        super().__init__(parts, app=task.app)
        self.task, self.it, self.n = task.name, items, n

    def __repr__(self) -> str:
        return f"chunks({self.task}, {len(self.it)} items, {self.n})"

    def group(self) -> _group:
        """The group of starmap signatures these chunks are."""
        return _group([t.clone() for t in self.tasks], app=self.app)


def job_options(task: Task) -> dict[str, Any]:
    """What a map job takes from the task it runs: where it goes and how it is run."""
    app = task.app
    route = app.route(task.name, (), {})
    options = {
        "queue": route.get("queue") or task.queue or app.conf.task_default_queue,
        "priority": route["priority"] if route.get("priority") is not None else task.priority,
        "time_limit": task.time_limit,
        "soft_time_limit": task.soft_time_limit,
        "acks_late": task.acks_late,
        "expires": task.expires,
    }
    return {k: v for k, v in options.items() if v is not None}


def wrapped_name(job_task: str, kwargs: Any) -> str:
    """The task a job runs the function of: the wrapped one for a map job (whose limits
    apply), else its own. (Rows can be written by hand: anything may be in kwargs.)"""
    wrapped = kwargs.get("task") if job_task in BUILTINS and isinstance(kwargs, dict) else None
    return wrapped if isinstance(wrapped, str) else job_task


class MapMethods:
    """Celery's ``task.map``, ``task.starmap`` and ``task.chunks``, which Task has."""

    def map(self, it: Iterable[Any]) -> xmap:
        """One job calling this task for each item; its result is the list of results."""
        return xmap(cast("Task", self), it)

    def starmap(self, it: Iterable[Sequence[Any]]) -> xstarmap:
        """One job calling this task with each item's arguments (``task(*item)``)."""
        return xstarmap(cast("Task", self), it)

    def chunks(self, it: Iterable[Sequence[Any]], n: int) -> chunks:
        """The items in parts of ``n``, each a starmap job, sent as a group."""
        return chunks(cast("Task", self), it, n)
