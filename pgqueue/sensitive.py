"""Tasks whose arguments are never shown: those declared ``@app.task(sensitive=True)`` and
those named by glob patterns. The web dashboard and the Django admin both hide them by this
one rule."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

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

    def hides(self, task_name: str) -> bool:
        return any(fnmatch.fnmatchcase(task_name, p) for p in self.patterns)

    def like_patterns(self) -> list[str]:
        """The same patterns as SQL LIKE patterns (``*`` -> ``%``, ``?`` -> ``_``)."""
        out = []
        for pattern in self.patterns:
            escaped = re.sub(r"([\\%_])", r"\\\1", pattern)
            out.append(escaped.replace("*", "%").replace("?", "_"))
        return out
