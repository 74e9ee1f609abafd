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

# Celery's rate limit units: "10/s", "100/m", "1000/h" (a plain number: per second).
RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}

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
    # at most this many jobs of the task claimed at once, cluster-wide (per value of the
    # argument named concurrency_key, at args[key_pos] when passed by position)
    concurrency_limit: int | None = None
    concurrency_key: str | None = None
    key_pos: int | None = None
    # at most this many starts per second, cluster-wide
    rate_limit: float | None = None

    @property
    def limited(self) -> bool:
        return self.concurrency_limit is not None or self.rate_limit is not None

    def limit_spec(self, name: str) -> dict[str, Any]:
        """This task's entry of pgqueue.claim_limited's ``limits``."""
        return {
            "task": name,
            "concurrency": self.concurrency_limit,
            "key_name": self.concurrency_key,
            "key_pos": self.key_pos,
            "rate": self.rate_limit,
        }

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
        concurrency, key, key_pos = _concurrency(name, fun, options)
        return cls(
            unique=unique,
            unique_until=until,
            signature=signature,
            concurrency_limit=concurrency,
            concurrency_key=key,
            key_pos=key_pos,
            rate_limit=parse_rate(name, options.pop("rate_limit", None)),
        )

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


def _concurrency(
    name: str, fun: Callable[..., Any], options: dict[str, Any]
) -> tuple[int | None, str | None, int | None]:
    """``concurrency_limit`` and ``concurrency_key`` (and the key's position) of options."""
    limit = options.pop("concurrency_limit", None)
    key = options.pop("concurrency_key", None)
    if limit is None:
        if key is not None:
            raise ConfigurationError(f"{name}: concurrency_key= needs a concurrency_limit=")
        return None, None, None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(
            f"{name}: concurrency_limit must be a whole number of jobs, at least 1, not {limit!r}"
        )
    if key is None:
        return limit, None, None
    parameters = inspect.signature(fun).parameters
    if not isinstance(key, str) or key not in parameters:
        raise ConfigurationError(
            f"{name}: concurrency_key must name one of the task's arguments "
            f"({', '.join(parameters) or 'none'}), not {key!r}"
        )
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p for p in parameters.values() if p.kind in kinds]
    names = [p.name for p in positional]
    return limit, key, names.index(key) if key in names else None


def parse_rate(name: str, rate: object) -> float | None:
    """Celery's rate limit syntax as starts per second: "10/s", "100/m", "1000/h", or a
    number (per second); None: no limit."""
    if rate is None:
        return None
    per_second: float | None = None
    try:
        if isinstance(rate, int | float) and not isinstance(rate, bool):
            per_second = float(rate)
        elif isinstance(rate, str):
            count, _, unit = rate.strip().partition("/")
            per_second = float(count) / RATE_UNITS[unit.strip() or "s"]
    except (ValueError, KeyError):
        per_second = None
    if per_second is None or not 0 < per_second < float("inf"):
        raise ConfigurationError(
            f"{name}: rate_limit={rate!r} is not a rate: write it as Celery does, "
            '"10/s", "100/m" or "1000/h" (a plain number is per second), above 0'
        )
    return per_second
