"""mkdocs hook: links to repository files outside docs/ work on the site as on GitHub.

A page links to a file of the repository relative to its own place in it
(``[sql/queries.sql](../sql/queries.sql)``, ``../examples/...``), which GitHub follows; the site
serves a copy of each such file under ``source/`` and the link points there (a folder becomes
plain text: the site cannot list it). README's sections the site includes with
``pymdownx.snippets`` (the pitch, the two commands) keep README's links, relative to the root:
``docs/guarantees.md#...`` becomes the page itself, ``LICENSE`` its served copy.
Links between pages and to their headings are checked by mkdocs (``validation`` in mkdocs.yml).
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from markdown import Extension, Markdown
from markdown.preprocessors import Preprocessor
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

SERVED = "source"  # where copies of repository files live in the site
# [text](target) outside code spans; the target has no scheme and is not an anchor alone.
LINK = re.compile(r"(?<!`)\[([^\]\n]+)\]\((?![a-z][a-z0-9+.-]*:|#|/)([^)\s#]+)(#[^)\s]*)?\)")
FENCE = re.compile(r"^\s*(```|~~~)")


class _Copy(File):
    """A repository file served as it is, Markdown included (not rendered as a page)."""

    def is_documentation_page(self) -> bool:
        return False


class _State:
    root = Path()
    docs = Path()
    page: Page | None = None


def _repo_target(page_src: str, target: str) -> Path | None:
    """The repository path a link means, when it is outside the docs: relative to the page's
    own place in the repository (``../examples``), else to the root (README's text)."""
    page_dir = (_State.docs / page_src).parent
    for base in (page_dir, _State.root):
        path = (base / target).resolve()
        inside_repo = path.is_relative_to(_State.root)
        if inside_repo and not path.is_relative_to(_State.docs) and path.exists():
            return path
    return None


class _RewriteLinks(Preprocessor):
    """Runs after snippets (priority 32) has pasted README's text into the page."""

    def run(self, lines: list[str]) -> list[str]:
        page = _State.page
        if page is None:
            return lines
        out, fenced = [], False
        for line in lines:
            if FENCE.match(line):
                fenced = not fenced
            out.append(line if fenced else LINK.sub(lambda m: _rewrite(m, page), line))
        return out


def _rewrite(match: re.Match[str], page: Page) -> str:
    text, target, anchor = match.group(1), match.group(2), match.group(3) or ""
    in_docs = (_State.root / target).resolve()
    if in_docs.is_relative_to(_State.docs) and in_docs.is_file():
        # README's link to a file of the site itself (docs/screenshots/overview.png): the
        # same file, from the page's place in the site
        own = in_docs.relative_to(_State.docs).as_posix()
        return f"[{text}]({posixpath.relpath(own, posixpath.dirname(page.file.src_uri))}{anchor})"
    found = _repo_target(page.file.src_uri, target)
    if found is None:
        return match.group(0)
    if found.is_dir():
        return text
    served = posixpath.join(SERVED, found.relative_to(_State.root).as_posix())
    return f"[{text}]({posixpath.relpath(served, posixpath.dirname(page.file.src_uri))}{anchor})"


class _Extension(Extension):
    def extendMarkdown(self, md: Markdown) -> None:
        md.preprocessors.register(_RewriteLinks(md), "pgqueue_readme_links", 31)


def on_config(config: MkDocsConfig, **kwargs: Any) -> MkDocsConfig:
    _State.root = Path(config.config_file_path).resolve().parent
    _State.docs = Path(config.docs_dir).resolve()
    config.markdown_extensions.append(_Extension())
    return config


def on_files(files: Files, config: MkDocsConfig, **kwargs: Any) -> Files:
    """Serve a copy of every repository file a page or README links to."""
    sources = [(_State.root / "README.md", "README.md")]
    sources += [(Path(f.abs_src_path or ""), f.src_uri) for f in files.documentation_pages()]
    wanted: set[Path] = set()
    for path, src in sources:
        for match in LINK.finditer(path.read_text()):
            page_src = src if path.is_relative_to(_State.docs) else "index.md"
            found = _repo_target(page_src, match.group(2))
            if found is not None and found.is_file():
                wanted.add(found)
    for found in sorted(wanted):
        uri = posixpath.join(SERVED, found.relative_to(_State.root).as_posix())
        copy = _Copy(uri, None, config.site_dir, config.use_directory_urls)
        copy.abs_src_path = str(found)
        files.append(copy)
    return files


def on_page_markdown(markdown: str, page: Page, **kwargs: Any) -> str:
    _State.page = page
    return markdown


def on_page_content(html: str, page: Page, **kwargs: Any) -> str:
    _State.page = None  # markdown rendered outside a page keeps its links as written
    return html
