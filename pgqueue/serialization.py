"""JSON in and out. pgqueue never pickles task arguments or results."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .exceptions import EncodeError

# A NUL character, as json.dumps escapes it (an odd number of backslashes before u0000).
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_NUL_MESSAGE = "a string contains a NUL character (\\x00), which Postgres cannot store"


# Built once: json.dumps with any option builds a new encoder per call, a cost that shows
# at 100,000 jobs per enqueue_many.
compact_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _dumps(value: Any) -> str:
    text = compact_json(value)
    # Postgres' jsonb cannot store NUL; refused here, the call fails with a clear message
    # rather than a whole batch of jobs or outcomes failing in the database.
    if "\\u0000" in text and _NUL.search(text):
        raise ValueError(_NUL_MESSAGE)
    return text


def as_json_types(
    args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[Sequence[Any], dict[str, Any]]:
    """A call's arguments as the types the JSON encoder takes (copied only if need be)."""
    return (
        args if type(args) in (list, tuple) else list(args),
        kwargs if type(kwargs) is dict else dict(kwargs),
    )


def dumps_args(task_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[str, str]:
    """Encode a call's arguments, naming the one JSON cannot carry."""
    try:
        positional, keywords = as_json_types(args, kwargs)
        return _dumps(positional), _dumps(keywords) if keywords else "{}"
    except (TypeError, ValueError):
        pass
    for index, value in enumerate(args):
        _check(task_name, f"positional argument {index}", value)
    for key, value in kwargs.items():
        if not isinstance(key, str):
            raise EncodeError(f"{task_name}: keyword names must be strings, got {key!r}")
        _check(task_name, f"keyword argument {key!r}", value)
    raise EncodeError(f"{task_name}: arguments are not JSON serializable")


def dumps_jobs(jobs: list[dict[str, Any]]) -> str:
    """Encode jobs (each a dict with ``task_name``, ``args`` and ``kwargs`` among its
    columns) as one JSON array, in one call; if that fails, name the argument at fault."""
    try:
        return _dumps(jobs)
    except (TypeError, ValueError) as exc:
        for job in jobs:
            dumps_args(job["task_name"], job["args"], job["kwargs"])
        # Not an argument: an option (a queue name with a NUL, say).
        name = jobs[0]["task_name"]
        raise EncodeError(f"{name}: a job's options cannot be stored: {exc}") from exc


def _check(task_name: str, what: str, value: Any) -> None:
    try:
        _dumps(value)
    except (TypeError, ValueError) as exc:
        hint = (
            "Strip it, or send binary data encoded (base64)."
            if exc.args and exc.args[0] == _NUL_MESSAGE
            else "Pass JSON types (str, int, float, bool, None, list, dict) only, e.g. an id "
            "instead of an object, an ISO string instead of a datetime."
        )
        raise EncodeError(
            f"{task_name}: {what} ({type(value).__name__}: {value!r:.80}) cannot be sent as "
            f"JSON: {exc}. {hint}"
        ) from exc


def dumps_result(value: Any) -> str:
    """Encode a task's return value; raises EncodeError if JSON cannot carry it."""
    try:
        return _dumps(value)
    except (TypeError, ValueError) as exc:
        raise EncodeError(
            f"the task returned {type(value).__name__}, which cannot be stored as JSON: {exc}"
        ) from exc
