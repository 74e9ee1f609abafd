"""Run a docs page's code blocks in order, as a reader following it would.

A page opts in by its blocks' languages (``tests/test_docs.py`` names the pages):

- ```` ```python title="tasks.py" ````: a file the reader saves; later blocks with the same
  title are added to the end of it.
- ```` ```python ````: typed into the reader's Python session (one namespace for the page).
- ```` ```pycon ````: the same session, checked with doctest against the output shown.
- ```` ```sh ````: commands in a terminal. ``pgqueue worker`` starts a worker in the
  background, replacing the previous one as the reader's Ctrl-C would (it must stop with
  exit 0); other ``pgqueue`` commands run to completion and must exit 0; ``pip install`` and
  ``export PGQUEUE_DSN=...`` are the test's own set-up (the package under test, the test
  database). Any other command fails the test: a page cannot show one that is not run.

Other languages (``text``, ``ini``, ``dockerfile``...) are shown, not run.
"""

from __future__ import annotations

import doctest
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import ROOT, wait_for

FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
TITLE = re.compile(r'title="([^"]+)"')
SET_UP_BY_THE_TEST = ("pip install ", "export PGQUEUE_DSN=")


@dataclass
class Block:
    language: str
    title: str | None
    text: str
    line: int  # where the block starts on the page, for failure messages


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a page, in order."""
    source = page.read_text()
    found = []
    for match in FENCE.finditer(source):
        title = TITLE.search(match.group(2))
        line = source.count("\n", 0, match.start()) + 1
        found.append(Block(match.group(1), title and title.group(1), match.group(3), line))
    return found


def commands(text: str) -> list[str]:
    """The commands of a shell block: comments dropped, ``\\`` continuations joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = (re.sub(r"(^|\s)#.*$", "", line).strip() for line in joined.splitlines())
    return [line for line in lines if line]


class Reader:
    """Follows one page in a directory of its own, against the database ``dsn``."""

    def __init__(self, page: Path, workdir: Path, dsn: str) -> None:
        self.page = page
        self.workdir = workdir
        self.dsn = dsn
        self.namespace: dict[str, Any] = {"__name__": "__docs__"}
        self.worker: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(ROOT)}
        self.shadowed: dict[str, Any] = {}  # modules of ours named like the page's files

    def where(self, block: Block) -> str:
        return f"{self.page.relative_to(ROOT)}, block at line {block.line}"

    def run(self) -> None:
        for block in blocks(self.page):
            if block.language == "python" and block.title:
                module = Path(block.title).stem
                if module in sys.modules and module not in self.shadowed:
                    self.shadowed[module] = sys.modules.pop(module)
                with open(self.workdir / block.title, "a") as f:
                    f.write(block.text)
            elif block.language == "python":
                code = compile(block.text, self.where(block), "exec")
                exec(code, self.namespace)
            elif block.language == "pycon":
                self.doctest(block)
            elif block.language == "sh":
                for command in commands(block.text):
                    self.shell(command, block)

    def doctest(self, block: Block) -> None:
        test = doctest.DocTestParser().get_doctest(
            block.text, self.namespace, self.where(block), str(self.page), block.line
        )
        out: list[str] = []
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        runner.run(test, out=out.append, clear_globs=False)
        self.namespace.update(test.globs)  # the DocTest ran on a copy of the session
        assert runner.failures == 0, "".join(out)

    def shell(self, command: str, block: Block) -> None:
        if command.startswith(SET_UP_BY_THE_TEST):
            return
        argv = shlex.split(command)
        assert argv[0] == "pgqueue", f"{self.where(block)}: the test cannot run {command!r}"
        cli = [sys.executable, "-m", "pgqueue.cli", *argv[1:]]
        if argv[1:2] == ["worker"]:
            self.stop_worker()
            self.start_worker(cli)
            return
        done = subprocess.run(
            cli, cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{self.where(block)}: {command}\n{done.stdout}{done.stderr}"

    def start_worker(self, cli: list[str]) -> None:
        log = open(self.workdir / "worker.log", "ab")  # noqa: SIM115 - closed with the worker
        self.worker = subprocess.Popen(
            cli, cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()  # the child has its own copy
        pid = self.worker.pid
        with psycopg.connect(self.dsn, autocommit=True) as db:

            def registered() -> bool:
                assert self.worker is not None and self.worker.poll() is None, self.log()
                query = "SELECT 1 FROM pgqueue.workers WHERE pid = %s"
                return db.execute(query, (pid,)).fetchone() is not None

            wait_for(registered, 60, "the worker to register")

    def stop_worker(self) -> None:
        """Ctrl-C: a warm shutdown, which must end with exit 0."""
        if self.worker is None:
            return
        worker, self.worker = self.worker, None
        worker.send_signal(2)  # SIGINT, what Ctrl-C sends
        try:
            code = worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
            raise AssertionError(f"the worker did not stop on Ctrl-C:\n{self.log()}") from None
        assert code == 0, f"the worker exited {code}:\n{self.log()}"

    def log(self) -> str:
        path = self.workdir / "worker.log"
        return path.read_text() if path.exists() else ""

    def close(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.kill()
            self.worker.wait()
        for value in self.namespace.values():
            if isinstance(value, psycopg.Connection):
                value.close()
        sys.modules.update(self.shadowed)
