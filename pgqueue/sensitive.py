"""Tasks whose arguments are never shown: those declared ``@app.task(sensitive=True)`` and
those named by glob patterns. The web dashboard and the Django admin both hide them by this
one rule."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .mapping import BUILTINS

if TYPE_CHECKING:
    from .app import PgQueue


@dataclass(frozen=True)
class Sensitive:
    """Tasks whose arguments (and kwargs) are never shown nor searched: names or glob
    patterns (``payments.*``), plus the registered tasks marked ``@app.task(sensitive=True)``
    (see :meth:`of`)."""

    patterns: tuple[str, ...] = ()

    @classmethod
    def of(cls, app: PgQueue, patterns: Sequence[str] = ()) -> Sensitive:
        """``patterns`` plus the tasks of ``app`` marked ``sensitive=True`` (those registered
        so far: import the tasks modules first, ``app.import_task_modules()``)."""
        marked = tuple(n for n, t in app.tasks.items() if t.sensitive)
        return cls(tuple(patterns) + marked)

    def hides(self, task_name: str, kwargs: Any = None) -> bool:
        """Whether a job of ``task_name`` with these ``kwargs`` has its arguments hidden. A
        map job (``pgqueue.map``, ``pgqueue.starmap``) carries another task's arguments under
        its own name: hidden when that task's are, or when it names none."""
        if task_name in BUILTINS and self.patterns:
            wrapped = kwargs.get("task") if isinstance(kwargs, dict) else None
            return not isinstance(wrapped, str) or self.hides(wrapped)
        return any(fnmatch.fnmatchcase(task_name, p) for p in self.patterns)

    def like_patterns(self) -> list[str]:
        """The same patterns as SQL LIKE patterns (``*`` -> ``%``, ``?`` -> ``_``); with any
        pattern at all, the map tasks' too (a text search cannot tell whose items a map job
        carries, so it searches none of them)."""
        out = []
        for pattern in self.patterns + (BUILTINS if self.patterns else ()):
            escaped = re.sub(r"([\\%_])", r"\\\1", pattern)
            out.append(escaped.replace("*", "%").replace("?", "_"))
        return out
