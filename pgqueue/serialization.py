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
_SURROGATE_MESSAGE = (
    "a string contains a lone surrogate (such as '\\udc80', left by bytes decoded with "
    "errors='surrogateescape'), which Postgres cannot store"
)
_NESTING_MESSAGE = "a value is nested too deeply to be encoded"
# Errors whose fix is to change the data, not its type.
_DATA_MESSAGES = (_NUL_MESSAGE, _SURROGATE_MESSAGE)


# Built once: json.dumps with any option builds a new encoder per call, a cost that shows
# at 100,000 jobs per enqueue_many.
compact_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _dumps(value: Any) -> str:
    try:
        text = compact_json(value)
    except RecursionError:
        raise ValueError(_NESTING_MESSAGE) from None
    # Postgres' jsonb cannot store NUL, nor a lone surrogate (json escapes it, the database
    # refuses the escape): refused here, the call fails with a clear message rather than a
    # whole batch of jobs or outcomes failing in the database. An escaped surrogate is
    # usually half of a proper pair (an emoji): only then is the value itself looked at.
    if "\\u0000" in text and _NUL.search(text):
        raise ValueError(_NUL_MESSAGE)
    if "\\ud" in text and _has_surrogate(value):
        raise ValueError(_SURROGATE_MESSAGE)
    if "e+" in text:
        text = _EXPONENT.sub(_positional, text)
    return text


# A JSON string (skipped), or a number with a positive exponent: json writes floats from
# 1e16 up so, and jsonb gives 1e+16 back as 10000000000000000, which json reads as an int.
_EXPONENT = re.compile(r'("(?:[^"\\]|\\.)*")|(-?\d+(?:\.\d+)?e\+\d+)')


def _positional(match: re.Match[str]) -> str:
    """A float written in full with a fraction, which jsonb keeps a float (the digits are
    the float's exact value, so it reads back the same)."""
    number = match.group(2)
    return match.group(0) if number is None else format(float(number), ".1f")


def _has_surrogate(value: Any) -> bool:
    """Whether a string in ``value`` holds a surrogate code point (UTF-8 cannot carry one;
    a pair of them would come back from the database as the one character they encode)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def check_size(task_name: str, what: str, size: int, limit: int | None) -> None:
    """Refuse an encoded payload over ``task_max_payload_size`` (``limit``, bytes)."""
    if limit is not None and size > limit:
        raise EncodeError(
            f"{task_name}: {what} take {size:,} bytes as JSON, over task_max_payload_size "
            f"({limit:,} bytes). Store large data elsewhere (a table, object storage) and "
            "pass its key, or raise the setting."
        )


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
        _check(task_name, "keyword argument name", key)
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
            # Not an argument: a column (a queue name with a NUL, say).
            for key, value in job.items():
                if key not in ("args", "kwargs"):
                    _check(job["task_name"], key, value)
        raise EncodeError(f"{jobs[0]['task_name']}: a job cannot be stored: {exc}") from exc


def _check(task_name: str, what: str, value: Any) -> None:
    try:
        _dumps(value)
    except (TypeError, ValueError) as exc:
        hint = (
            "Strip it, or send binary data encoded (base64)."
            if exc.args and exc.args[0] in _DATA_MESSAGES
            else "Pass JSON types (str, int, float, bool, None, list, dict) only, e.g. an id "
            "instead of an object, an ISO string instead of a datetime."
        )
        raise EncodeError(
            f"{task_name}: {what} ({type(value).__name__}: {value!r:.80}) cannot be sent as "
            f"JSON: {exc}. {hint}"
        ) from exc


def dumps_result(value: Any, limit: int | None = None) -> str:
    """Encode a task's return value; raises EncodeError if JSON cannot carry it, or if it
    is bigger than ``limit`` bytes (task_max_payload_size)."""
    try:
        text = _dumps(value)
    except (TypeError, ValueError) as exc:
        raise EncodeError(
            f"the task returned {type(value).__name__}, which cannot be stored as JSON: {exc}"
        ) from exc
    if limit is not None and len(text) > limit:
        raise EncodeError(
            f"the task returned {len(text):,} bytes of JSON, over task_max_payload_size "
            f"({limit:,} bytes): store large results elsewhere and return their key"
        )
    return text
