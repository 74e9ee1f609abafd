"""How commands print: tables and durations for people, JSON for scripts, progress on stderr."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import decimal
import json
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import click


def json_default(value: Any) -> Any:
    """What json.dumps cannot write itself: times, intervals, UUIDs, numerics, dataclasses."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def echo_json(value: Any, *, compact: bool = False) -> None:
    click.echo(json.dumps(value, default=json_default, indent=None if compact else 2))


def echo_fields(found: dict[str, Any]) -> None:
    """One ``key  value`` line per field that has a value, the traceback last as it is."""
    trace = found.get("traceback")
    fields = {k: v for k, v in found.items() if k != "traceback"}
    width = max(len(k) for k in fields)
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, list | dict) or key == "result":
            text = json.dumps(value, default=json_default)
        elif hasattr(value, "isoformat"):
            text = value.isoformat()
        else:
            text = str(value)
        click.echo(f"{key.ljust(width)}  {text}")
    if trace:
        click.echo("traceback:")
        click.echo(trace.rstrip())


def echo_workflow(flow: dict[str, Any]) -> None:
    """A workflow (ops.workflow): its kind and id, a chord's counter, its members in order."""
    line = f"{flow['kind']} {flow['id']}"
    if flow["parent_id"]:
        line += f" (a step of chain {flow['parent_id']})"
    chord = flow.get("chord")
    if chord:
        line += (
            f": {chord['state']}, {chord['remaining']} of {chord['size']} member(s) to go,"
            f" callback {chord['callback_id']}"
        )
        if chord["failed_member"]:
            line += f", failed by {chord['failed_member']}"
    click.echo("")
    click.echo(line)
    rows = [
        (
            str(m["position"]),
            m["task_id"],
            m["task_name"],
            m["state"],
            error(m["exc_type"], m["exc_message"]),
        )
        for m in flow["members"]
    ]
    click.echo(table(("#", "task id", "task", "state", "error"), rows))


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, the header first."""
    lines = [tuple(header), *(tuple(r) for r in rows)]
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in lines
    )


def when(value: dt.datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


def seconds(value: float | None) -> str:
    """A duration for people: 0.25s, 42s, 3m05s, 2h10m, 4d3h."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f}s"
    whole = int(value)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600}h"


def ago(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    return seconds(max(0.0, (dt.datetime.now(dt.timezone.utc) - value).total_seconds())) + " ago"


def error(exc_type: str | None, exc_message: str | None, width: int = 60) -> str:
    """An error on one table cell: the exception's class name and message, cut to width."""
    if not exc_type:
        return ""
    text = f"{exc_type.rsplit('.', 1)[-1]}: {exc_message or ''}".replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


@contextlib.contextmanager
def progress(total: int, verb: str) -> Iterator[Callable[[int], None]]:
    """Progress of a batched operation on stderr: a bar on a terminal, else a count per
    batch (for logs)."""
    if sys.stderr.isatty():
        with click.progressbar(length=total, label=verb, file=sys.stderr, show_pos=True) as bar:
            yield bar.update
        return
    done = 0

    def count(n: int) -> None:
        nonlocal done
        done += n
        click.echo(f"{verb}: {done:,}/{total:,}", err=True)

    yield count
