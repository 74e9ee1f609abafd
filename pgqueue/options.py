"""The options a call may give ``apply_async``/``send_task``, in one table that the producer
(which refuses any other) and beat (which checks an entry's options against it) share."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from .canvas import Signature

# Options stored with the job (its options column), overriding the task's own.
PER_CALL_OPTIONS = (
    "ignore_result",
    "acks_late",
    "retry_backoff",
    "retry_backoff_max",
    "retry_jitter",
    "default_retry_delay",
    # the scheduled time of the periodic-task tick that sent the job (set by beat)
    "beat_tick",
)

# Every option send_task accepts: those with a column of their own, then the per-call ones.
SEND_OPTIONS = frozenset(
    {
        "countdown",
        "eta",
        "expires",
        "queue",
        "priority",
        "task_id",
        "max_retries",
        "time_limit",
        "soft_time_limit",
        "unique_key",
        "unique_until",
        *PER_CALL_OPTIONS,
    }
)


class SendOptions(TypedDict, total=False):
    """The options of ``aapply_async``/``asend_task``, typed: those of ``apply_async``
    (beat's own ``beat_tick`` aside), ``link`` and ``link_error`` included. An option left
    out is not given; ``max_retries=None`` means no limit."""

    countdown: float | None
    eta: dt.datetime | None
    expires: float | dt.timedelta | dt.datetime | None
    queue: str | None
    priority: int | None
    task_id: str | None
    max_retries: int | None
    time_limit: float | None
    soft_time_limit: float | None
    # a unique job (docs/queue-controls.md, "Unique jobs"): "started" or "finished"
    unique_key: str | None
    unique_until: str
    ignore_result: bool
    acks_late: bool
    retry_backoff: bool | float
    retry_backoff_max: float
    retry_jitter: bool
    default_retry_delay: float
    link: Signature | Sequence[Signature] | None
    link_error: Signature | Sequence[Signature] | None
