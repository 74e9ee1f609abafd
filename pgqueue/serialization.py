"""JSON in and out. pgqueue never pickles task arguments or results."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .exceptions import EncodeError


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def dumps_args(task_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[str, str]:
    """Encode a call's arguments, naming the one JSON cannot carry."""
    try:
        return _dumps(list(args)), _dumps(dict(kwargs))
    except (TypeError, ValueError):
        pass
    for index, value in enumerate(args):
        _check(task_name, f"positional argument {index}", value)
    for key, value in kwargs.items():
        if not isinstance(key, str):
            raise EncodeError(f"{task_name}: keyword names must be strings, got {key!r}")
        _check(task_name, f"keyword argument {key!r}", value)
    raise EncodeError(f"{task_name}: arguments are not JSON serializable")


def _check(task_name: str, what: str, value: Any) -> None:
    try:
        _dumps(value)
    except (TypeError, ValueError) as exc:
        raise EncodeError(
            f"{task_name}: {what} ({type(value).__name__}: {value!r:.80}) cannot be sent as "
            f"JSON: {exc}. Pass JSON types (str, int, float, bool, None, list, dict) only, "
            "e.g. an id instead of an object, an ISO string instead of a datetime."
        ) from exc


def dumps_result(value: Any) -> str:
    """Encode a task's return value; raises EncodeError if JSON cannot carry it."""
    try:
        return _dumps(value)
    except (TypeError, ValueError) as exc:
        raise EncodeError(
            f"the task returned {type(value).__name__}, which cannot be stored as JSON: {exc}"
        ) from exc
