"""The docs site builds with no warning, and the pages a reader follows step by step run as
shown (tests/docsamples.py says how each kind of block is run)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgqueue import current
from tests.conftest import ROOT
from tests.docsamples import Reader, blocks, commands

pytest.importorskip("mkdocs", reason="the docs tools: pip install -e . --group docs")

DOCS = ROOT / "docs"
# The pages whose every code block is run, in order, by test_page_runs_as_shown.
RUNNABLE = ["tutorial.md", "how-to/fastapi.md"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = build.stdout + build.stderr
    assert build.returncode == 0, log
    assert "WARNING" not in log, log
    return out


def test_the_site_builds_strictly_with_every_page(site: Path) -> None:
    pages = sorted(p.relative_to(DOCS) for p in DOCS.rglob("*.md") if "hooks" not in p.parts)
    for page in pages:
        built = site / page.with_suffix("") / "index.html"
        if page.name == "index.md":
            built = site / page.parent / "index.html"
        assert built.exists(), f"{page} was not built"
        # Nothing is fetched from elsewhere to show a page (material's font: false).
        assert not re.search(r"<(link|script)[^>]+https?://", built.read_text()), page


def test_the_guarantees_page_is_built_with_its_text(site: Path) -> None:
    html = (site / "guarantees" / "index.html").read_text()
    assert "test_sigkilled_worker_loses_no_job" in html
    assert "Exactly once, where a transaction can make it so." in html
    index = (site / "index.html").read_text()
    assert "Transactional enqueue." in index  # README's pitch, included on the home page
    for page in ("index.html", "development/index.html"):
        text = (site / page).read_text()
        assert "--8&lt;--" not in text and "--8<--" not in text, page  # every snippet included


def test_links_reach_their_page_and_repository_files_are_served(site: Path) -> None:
    html = (site / "workers" / "index.html").read_text()
    assert 'href="../guarantees/"' in html
    assert 'href="../recovery/#crash-recovery-at-least-once-with-fencing"' in html
    # README's pitch links docs/guarantees.md, which on the site is the page itself
    assert 'href="guarantees/"' in (site / "index.html").read_text()
    # a page's link to a repository file outside docs/ is served with the site
    how = (site / "how-it-works" / "index.html").read_text()
    assert 'href="../source/sql/queries.sql"' in how
    assert (site / "source" / "sql" / "queries.sql").read_text().startswith("--")


def test_the_cli_reference_is_the_commands_own_help(site: Path) -> None:
    from click.testing import CliRunner

    from pgqueue.cli import main

    html = (site / "reference" / "cli" / "index.html").read_text()
    for path in (["worker"], ["beat", "add"], ["dev", "up"], ["retry"]):
        assert f"<code>pgqueue {' '.join(path)}</code>" in html
    help_text = CliRunner().invoke(main, ["worker", "--help"], terminal_width=78).output
    for option in ("--prefetch-multiplier", "--max-memory-per-child", "--metrics-port"):
        assert option in help_text and option in html


def test_the_api_reference_renders_the_docstrings(site: Path) -> None:
    html = (site / "reference" / "api" / "index.html").read_text()
    for text in (
        "A pgqueue application, the counterpart of",
        "Queue a task by name; the task need not be registered in this process.",
        "SoftTimeLimitExceeded",
        "crontab",
    ):
        assert text in html, text


def test_shell_blocks_of_the_runnable_pages_are_commands_the_test_knows() -> None:
    for name in RUNNABLE:
        for block in blocks(DOCS / name):
            if block.language == "sh":
                for command in commands(block.text):
                    assert command.startswith(("pgqueue ", "pip install ", "export ")), command


@pytest.fixture
def reader_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh directory on sys.path, as the reader's working directory; the modules a page
    writes there (tasks.py...) are forgotten afterwards, and the current app restored."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    app_before = current._default_app
    yield tmp_path
    for name in set(sys.modules) - before:
        module = sys.modules[name]
        if getattr(module, "__file__", None) and str(tmp_path) in str(module.__file__):
            app = getattr(module, "app", None)
            if app is not None and hasattr(app, "close"):
                app.close()
            del sys.modules[name]
    if app_before is not None:
        current.set_default_app(app_before)


@pytest.mark.parametrize("name", RUNNABLE)
def test_page_runs_as_shown(name: str, dsn: str, reader_dir: Path) -> None:
    reader = Reader(DOCS / name, reader_dir, dsn)
    try:
        reader.run()
        reader.stop_worker()
    finally:
        reader.close()
