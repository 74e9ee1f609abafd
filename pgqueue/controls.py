"""A task's queue controls, declared with ``@app.task(...)``: its unique key, and (read by
the worker) its concurrency and rate limits. Each is checked once, when the task is
declared, so that a call never meets a malformed one."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .exceptions import ConfigurationError, EncodeError
from .serialization import compact_json

UNIQUE_UNTIL = ("started", "finished")
# Longest unique key, in bytes of UTF-8: a key of a btree index (entries stop at 2,704).
UNIQUE_KEY_MAX_BYTES = 2000

# The options of ``@app.task`` this module takes.
TASK_OPTIONS = ("unique", "unique_until")

UniqueSpec = Sequence[str] | Callable[..., Any] | None


@dataclass(frozen=True)
class TaskControls:
    """What ``@app.task(unique=..., unique_until=...)`` declared.

    ``unique``: the names of the arguments whose values make a call's key (the task's name
    and those values), or a function of the call's arguments returning the key (a string;
    None: no key for this call). ``unique_until``: ``"started"`` (the default: the key is
    held until a worker first takes the job) or ``"finished"``.
    """

    unique: UniqueSpec = None
    unique_until: str = "started"
    signature: inspect.Signature | None = None

    @classmethod
    def declared(cls, name: str, fun: Callable[..., Any], options: dict[str, Any]) -> TaskControls:
        """The controls among ``options`` (removed from it), checked."""
        unique = options.pop("unique", None)
        until = options.pop("unique_until", "started")
        check_unique_until(name, until)
        signature = None
        if isinstance(unique, str):
            unique = (unique,)
        if unique is not None and not callable(unique):
            if not isinstance(unique, Sequence) or not all(isinstance(a, str) for a in unique):
                raise ConfigurationError(
                    f"{name}: unique= must name arguments (a tuple of names) or be a function "
                    f"of the call's arguments returning the key, not {unique!r}"
                )
            signature = inspect.signature(fun)
            missing = [a for a in unique if a not in signature.parameters]
            if missing:
                raise ConfigurationError(
                    f"{name}: unique= names {', '.join(missing)}, which the task does not "
                    f"take (its arguments: {', '.join(signature.parameters) or 'none'})"
                )
            unique = tuple(unique)
        return cls(unique=unique, unique_until=until, signature=signature)

    def unique_key(self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
        """The key of a call of task ``name`` (None: the task declares none)."""
        if self.unique is None:
            return None
        if callable(self.unique):
            key = self.unique(*args, **kwargs)
            return None if key is None else check_unique_key(name, key)
        assert self.signature is not None
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{name}: {exc}") from None
        bound.apply_defaults()
        values = [bound.arguments[a] for a in self.unique]
        try:
            text = compact_json(values)
        except (TypeError, ValueError) as exc:
            raise EncodeError(f"{name}: the arguments of its unique key: {exc}") from None
        return check_unique_key(name, f"{name}:{text}")


def check_unique_until(name: str, until: object) -> str:
    if until not in UNIQUE_UNTIL:
        raise ValueError(
            f"{name}: unique_until must be 'started' (the key is held until a worker takes "
            f"the job) or 'finished' (until it finishes), not {until!r}"
        )
    return str(until)


def check_unique_key(name: str, key: object) -> str:
    if not isinstance(key, str) or not key:
        raise TypeError(f"{name}: a unique key must be a non-empty string, not {key!r}")
    size = len(key.encode("utf-8", "surrogatepass"))
    if "\x00" in key or size > UNIQUE_KEY_MAX_BYTES:
        raise ValueError(
            f"{name}: the unique key {key[:40]!r}... is {size} bytes or holds a NUL character; "
            f"a key may have at most {UNIQUE_KEY_MAX_BYTES} bytes (UTF-8), no NUL: hash a "
            "longer one"
        )
    return key
