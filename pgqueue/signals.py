"""Signals: hooks to run code at points of a task's or a worker's life, with Celery's names.

Connect a function, which is called with keyword arguments only (accept ``**kwargs``: more
may be added)::

    from pgqueue.signals import task_failure

    @task_failure.connect
    def report(sender=None, task_id=None, exception=None, **kwargs):
        sentry_sdk.capture_exception(exception)

    @task_prerun.connect(sender="emails.send")   # only for this task (a name or the task)
    def before_email(task_id=None, args=None, **kwargs): ...

Task signals are sent in the process that runs the task: a prefork child, a thread of the
threads pool, the worker itself with solo, or the asyncio pool's event loop (in the job's
asyncio task). Connect them at import time of the module that
defines the tasks, so forked children inherit them. An exception raised by a receiver is
logged (logger ``pgqueue.signals``) and never reaches the task or the worker.

==================  ==========================================================================
signal              keyword arguments (besides ``signal`` and ``sender``)
==================  ==========================================================================
task_prerun         sender=task, task_id, task, args, kwargs
task_postrun        sender=task, task_id, task, args, kwargs, retval, state
task_success        sender=task, result
task_failure        sender=task, task_id, exception, args, kwargs, traceback (the traceback
                    object, None when there is none), einfo (the formatted traceback text)
task_retry          sender=task, request, reason (the exception, or the Retry), einfo
worker_ready        sender=worker (the ``pgqueue.Worker``)
worker_shutdown     sender=worker
==================  ==========================================================================
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar, overload

log = logging.getLogger("pgqueue.signals")

R = TypeVar("R", bound=Callable[..., Any])

_ANY = object()


class Signal:
    """A named hook: ``connect`` receivers, ``send`` to call them all."""

    def __init__(self, name: str, doc: str = "") -> None:
        self.name = name
        self.__doc__ = doc or f"The {name} signal."
        self._lock = threading.Lock()
        # (key, receiver, sender filter); replaced, never mutated, so send() needs no lock
        self._receivers: tuple[tuple[Any, Callable[..., Any], Any], ...] = ()

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"

    @overload
    def connect(
        self, receiver: R, *, sender: Any = None, weak: bool = False, dispatch_uid: Any = None
    ) -> R: ...

    @overload
    def connect(
        self,
        receiver: None = None,
        *,
        sender: Any = None,
        weak: bool = False,
        dispatch_uid: Any = None,
    ) -> Callable[[R], R]: ...

    def connect(
        self,
        receiver: Any = None,
        *,
        sender: Any = None,
        weak: bool = False,
        dispatch_uid: Any = None,
    ) -> Any:
        """Connect ``receiver``; also a decorator, bare or with ``sender=``/``dispatch_uid=``.

        With ``sender`` the receiver only hears sends from that sender: the object itself
        or, for tasks, its name. Connecting the same function (or ``dispatch_uid``) twice
        keeps one connection. Receivers are held by strong references (``weak`` is accepted
        for Celery's signature and ignored), so a receiver defined in a function stays
        connected until ``disconnect``.
        """

        def register(fn: R) -> R:
            key = dispatch_uid if dispatch_uid is not None else (id(fn), _sender_key(sender))
            with self._lock:
                if all(k != key for k, _, _ in self._receivers):
                    self._receivers = (
                        *self._receivers,
                        (key, fn, _ANY if sender is None else sender),
                    )
            return fn

        if receiver is not None:
            return register(receiver)
        return register

    def disconnect(
        self,
        receiver: Callable[..., Any] | None = None,
        *,
        sender: Any = None,
        dispatch_uid: Any = None,
    ) -> bool:
        """Disconnect a receiver (as connected, with the same ``sender``), or a
        ``dispatch_uid``; True if one was connected."""
        key = dispatch_uid if dispatch_uid is not None else (id(receiver), _sender_key(sender))
        with self._lock:
            kept = tuple(r for r in self._receivers if r[0] != key)
            removed = len(kept) != len(self._receivers)
            self._receivers = kept
        return removed

    @property
    def receivers(self) -> list[Callable[..., Any]]:
        return [fn for _, fn, _ in self._receivers]

    def send(self, sender: Any, **named: Any) -> list[tuple[Callable[..., Any], Any]]:
        """Call every receiver listening to ``sender``; returns ``(receiver, response)``
        pairs, the response being the exception when a receiver raised (it is logged)."""
        receivers = self._receivers
        if not receivers:
            return []
        responses: list[tuple[Callable[..., Any], Any]] = []
        for _, fn, wanted in receivers:
            if wanted is not _ANY and not _matches(wanted, sender):
                continue
            try:
                response = fn(signal=self, sender=sender, **named)
            except Exception as exc:
                log.exception(
                    "signal %s: receiver %s raised %s", self.name, _describe(fn), type(exc).__name__
                )
                response = exc
            responses.append((fn, response))
        return responses


def _sender_key(sender: Any) -> Any:
    if sender is None:
        return None
    return sender if isinstance(sender, str) else id(sender)


def _matches(wanted: Any, sender: Any) -> bool:
    if wanted is sender:
        return True
    if isinstance(wanted, str):
        return wanted == sender or wanted == getattr(sender, "name", None)
    return False


def _describe(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


task_prerun = Signal("task_prerun", "Sent just before a task runs.")
task_postrun = Signal("task_postrun", "Sent after a task ran, whatever its outcome.")
task_success = Signal("task_success", "Sent when a task returned (its outcome is SUCCESS).")
task_failure = Signal("task_failure", "Sent when a task failed (its outcome is FAILURE).")
task_retry = Signal("task_retry", "Sent when a task will be retried (its outcome is RETRY).")
worker_ready = Signal("worker_ready", "Sent when a worker is ready to take jobs.")
worker_shutdown = Signal("worker_shutdown", "Sent when a worker shuts down.")

__all__ = [
    "Signal",
    "task_failure",
    "task_postrun",
    "task_prerun",
    "task_retry",
    "task_success",
    "worker_ready",
    "worker_shutdown",
]
