"""``shared_task``: a task declared without an app (Celery's idiom for reusable apps and
Django projects), registered with every app and resolved against the current one."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from .current import default_app, on_every_app
from .task import Task

if TYPE_CHECKING:
    from .app import PgQueue

F = TypeVar("F", bound=Callable[..., Any])


class SharedTask:
    """Stands for the task of that name in whichever app is current when it is used.

    ``add.delay(2, 2)`` queues through the current app (the last ``PgQueue`` created, the
    one a worker's ``-A`` loaded), so a tasks module needs no import of the app.
    """

    def __init__(self, name: str, fun: Callable[..., Any]) -> None:
        self.name = name
        self.__wrapped__ = fun
        self.__doc__ = fun.__doc__
        self.__name__ = getattr(fun, "__name__", name)
        self.__module__ = getattr(fun, "__module__", "")

    def _get_current_object(self) -> Task:
        """The task registered under this name in the current app (Celery's Proxy API)."""
        return default_app().tasks[self.name]

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._get_current_object(), attribute)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._get_current_object()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<@shared_task: {self.name}>"


@overload
def shared_task(fun: F) -> Task: ...


@overload
def shared_task(fun: None = None, **options: Any) -> Callable[[F], Task]: ...


def shared_task(fun: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Declare a task for every app: ``@shared_task`` or ``@shared_task(bind=True, ...)``.

    Takes the options of ``app.task``. The task is registered with each app that exists and
    each one created later; the object returned stands for the current app's (see
    ``SharedTask``), so ``delay``, ``apply_async``, ``s`` and a direct call work as on a
    task made with ``@app.task``.
    """

    def create(f: Callable[..., Any]) -> Task:
        name = options.get("name") or f"{f.__module__}.{f.__qualname__}"

        def register(app: PgQueue) -> None:
            if name not in app.tasks:
                app.task(**{**options, "name": name})(f)

        on_every_app(register)
        return cast(Task, SharedTask(name, f))

    if fun is not None:
        return create(fun)
    return create
