"""What the worker decides about a job from its task's settings, in one place: whether it
is acknowledged late, its time limits, and when a failure becomes an automatic retry.

``execution.Execution.failed`` asks ``autoretries``/``autoretry_options`` about an exception a task
raised; the worker asks ``JobPolicy.retry_after_pool_failure`` about a failure the pool
decided on (a hard time limit, a child that died), which the task never saw.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import states
from .exceptions import Ignore, Reject, Retry, WorkerLostError
from .mapping import wrapped_name

if TYPE_CHECKING:
    from .app import PgQueue
    from .execution import Job, Outcome
    from .pool import Pool
    from .task import Task

log = logging.getLogger("pgqueue.worker")


def autoretries(task: Task, error: type[BaseException]) -> bool:
    """Whether ``autoretry_for`` turns this error into an automatic retry (the task's own
    Retry, Ignore and Reject keep their meaning)."""
    return (
        bool(task.autoretry_for)
        and issubclass(error, task.autoretry_for)
        and not issubclass(error, Retry | Ignore | Reject)
    )


def autoretry_options(task: Task, job: Job) -> dict[str, Any]:
    """The keyword arguments of the automatic ``task.retry()``: ``retry_kwargs`` with the
    countdown and retry limit worked out for this job."""
    return {
        **task.retry_kwargs,
        "countdown": autoretry_countdown(task, job.retries, job.options),
        "max_retries": task.retry_limit(job.max_retries, job.options, automatic=True),
    }


def autoretry_countdown(task: Task, retries: int, options: Mapping[str, Any]) -> float:
    """Seconds before an automatic retry: the backoff when retry_backoff is on (as in
    Celery, it wins over ``retry_kwargs["countdown"]``), else that countdown, else
    default_retry_delay."""
    if not options.get("retry_backoff", task.retry_backoff) and "countdown" in task.retry_kwargs:
        return float(task.retry_kwargs["countdown"])
    return backoff_countdown(task, retries, options)


def backoff_countdown(task: Task, retries: int, options: Mapping[str, Any]) -> float:
    """Seconds before the next automatic retry, exponential when retry_backoff is set."""
    backoff = options.get("retry_backoff", task.retry_backoff)
    if not backoff:
        return float(options.get("default_retry_delay", task.default_retry_delay))
    factor = 1.0 if backoff is True else float(backoff)
    maximum = float(options.get("retry_backoff_max", task.retry_backoff_max))
    countdown = min(maximum, factor * (2.0**retries))
    if options.get("retry_jitter", task.retry_jitter):
        countdown = random.uniform(0, countdown)
    return countdown


class JobPolicy:
    """The settings of the tasks of one app, as they apply to the jobs a worker runs."""

    def __init__(self, app: PgQueue) -> None:
        self.app = app
        self._limits: dict[str, tuple[float | None, float | None]] = {}
        # Set once the warning about an unenforceable per-call time limit was logged.
        self._warned_limit = False

    def acks_late(self, job: Job) -> bool:
        task = self.app.tasks.get(job.task_name)
        default = task.acks_late if task else bool(self.app.conf.task_acks_late)
        value = job.options.get("acks_late")
        # as claim_jobs reads it: anything but a boolean (a row written by hand) is ignored
        return value if isinstance(value, bool) else default

    def limits(self, job: Job) -> tuple[float | None, float | None]:
        """The job's soft and hard time limits: its own, else its task's (for a map job,
        the task it runs)."""
        # a map job's default limits are those of the task it runs (its own row may have
        # been written by hand without them)
        name = wrapped_name(job.task_name, job.kwargs)
        limits = self._limits.get(name)
        if limits is None:
            # Worked out once per task: the settings are fixed once the worker runs, and
            # reading them through the task for every job showed in the drain's profile.
            task = self.app.tasks.get(name)
            limits = (task.soft_time_limit, task.time_limit) if task else (None, None)
            self._limits[name] = limits
        return job.soft_time_limit or limits[0], job.time_limit or limits[1]

    def settle_pool_failure(self, outcome: Outcome) -> Outcome:
        """The outcome as written: a failure the pool decided on becomes a RETRY when the
        policy says so (see retry_after_pool_failure)."""
        if outcome.pool_failure is not None:
            job, error = outcome.pool_failure
            outcome.pool_failure = None
            countdown = self.retry_after_pool_failure(job, error)
            if countdown is not None:
                outcome.state = states.RETRY
                outcome.countdown = countdown
        return outcome

    def retry_after_pool_failure(self, job: Job, error: type[BaseException]) -> float | None:
        """The countdown of the retry a failure the pool decided on gets, or None if it
        stays a failure: ``autoretry_for`` applies as to the task's own errors, and
        Celery's ``task_reject_on_worker_lost`` runs an acks_late job whose child died
        (OOM killer, SIGKILL) again at once, like a job of a lost worker."""
        task = self.app.tasks.get(job.task_name)
        if task is None:
            return None
        if autoretries(task, error):
            countdown = autoretry_countdown(task, job.retries, job.options)
        elif (
            issubclass(error, WorkerLostError)
            and task.reject_on_worker_lost
            and self.acks_late(job)
        ):
            countdown = 0.0
        else:
            return None
        limit = task.retry_limit(job.max_retries, job.options, automatic=True)
        return countdown if limit is None or job.retries < limit else None

    # -- what a pool leaves unenforced -------------------------------------------------------------

    def warn_unenforced(self, pool: Pool, **child_limits: int | None) -> None:
        """At start-up, say which limit or option ``pool`` leaves unenforced, so that nobody
        relies on it (``child_limits``: max_tasks_per_child, max_memory_per_child)."""
        if not pool.enforces_hard_limit:
            limits = []
            if self.app.conf.task_time_limit:
                limits.append(f"task_time_limit={self.app.conf.task_time_limit:g}")
            limited = sorted(t.name for t in self.app.tasks.values() if t._time_limit)
            if limited:
                limits.append(f"time_limit of {', '.join(limited)}")
            if limits:
                log.warning(
                    "the %s pool cannot enforce hard time limits (%s): tasks past them keep "
                    "running; use -P prefork to have them stopped",
                    pool.name,
                    "; ".join(limits),
                )
        if not pool.has_children:
            ignored = [
                f"--{name.replace('_', '-')}={value}"
                for name, value in child_limits.items()
                if value
            ]
            if ignored:
                log.warning(
                    "the %s pool has no child processes: %s only apply to -P prefork and "
                    "are ignored",
                    pool.name,
                    " ".join(ignored),
                )

    def check_call_limit(self, job: Job, pool: Pool) -> None:
        """Warn, once per worker, of a per-call time limit the pool cannot enforce: such a
        limit is not known at start-up, when warn_unenforced speaks."""
        if job.time_limit and not pool.enforces_hard_limit and not self._warned_limit:
            self._warned_limit = True
            log.warning(
                "task %s has a per-call time_limit of %g s, which the %s pool cannot "
                "enforce: such tasks run to the end; use -P prefork to have them stopped",
                job.label,
                job.time_limit,
                pool.name,
            )
