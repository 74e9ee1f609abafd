"""Log set-up for pgqueue's processes: a line for people, or one JSON object per line.

The worker logs one line when a job starts and one when it finishes. Besides the message,
those records carry structured fields (``extra``) that the JSON format emits as keys:
``event`` (task_started, task_finished), ``task_name``, ``task_id``, ``queue``, and on
finishing ``outcome`` (the state: SUCCESS, FAILURE, RETRY, ...) and ``runtime`` (seconds).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

TEXT_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
FORMATS = ("text", "json")

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, process, message, the record's
    ``extra`` fields, and ``exc_info`` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc_info"] = record.exc_text
        if record.stack_info:
            data["stack_info"] = record.stack_info
        return json.dumps(data, default=str, ensure_ascii=False)


def setup(level: str = "INFO", fmt: str = "text", text_format: str = TEXT_FORMAT) -> None:
    """Log to stderr at ``level`` in ``fmt`` ("text" or "json"), unless the root logger
    already has handlers (an embedding application configured logging itself)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: choose one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(text_format))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def job_fields(task_name: str, task_id: str, queue: str | None, **more: Any) -> dict[str, Any]:
    """The structured fields of a per-job log line (``log.info(..., extra=job_fields(...))``)."""
    return {"task_name": task_name, "task_id": task_id, "queue": queue, **more}
