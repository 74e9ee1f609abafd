"""The built-in tasks ``pgqueue.map`` and ``pgqueue.starmap`` as the worker runs them: the
arguments checked (they are untrusted), then the wrapped task's function called once per
item. mapping.py is the sending side (``task.map``, ``task.starmap``, ``task.chunks``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .exceptions import NotRegistered
from .mapping import MAP, STARMAP, check
from .task import Request, reset_current_request, set_current_request

if TYPE_CHECKING:
    from .app import PgQueue
    from .task import Task


def register(app: PgQueue) -> None:
    """Register the built-in map tasks with ``app`` (every app has them)."""
    app.task(name=MAP)(_runner(app, star=False))
    app.task(name=STARMAP)(_runner(app, star=True))


def _runner(app: PgQueue, *, star: bool) -> Callable[[str, list[Any]], list[Any]]:
    builtin = STARMAP if star else MAP

    def run(task: str, it: list[Any]) -> list[Any]:
        # The arguments are untrusted (anyone who can enqueue can write them): all is
        # checked before the first item runs.
        if not isinstance(task, str) or not isinstance(it, list):
            raise TypeError(
                f"{builtin} takes task (a task name) and it (a JSON array of items), got "
                f"{type(task).__name__} and {type(it).__name__}"
            )
        target = app.tasks.get(task)
        if target is None:
            raise NotRegistered(f"{builtin}: task {task!r} is not registered on this worker")
        check(target)
        if star:
            for item in it:
                if not isinstance(item, list):
                    raise TypeError(
                        f"{builtin} of {task}: each item is a JSON array of arguments, got {item!r}"
                    )
        return [_call(target, item, star) for item in it]

    run.__doc__ = f"Celery's {'starmap' if star else 'map'}: call a task once per item."
    run.__name__ = run.__qualname__ = builtin.replace(".", "_")
    return run


def _call(task: Task, item: Any, star: bool) -> Any:
    """One call, as if called directly (as Celery's map does): a request of its own with
    ``called_directly`` set, so ``self.request`` is the item's and ``self.retry()`` raises
    (no per-item retries), and ``autoretry_for`` does not apply."""
    args = list(item) if star else [item]
    token = set_current_request(Request(task=task.name, args=args, called_directly=True))
    try:
        return task(*args)
    finally:
        reset_current_request(token)
