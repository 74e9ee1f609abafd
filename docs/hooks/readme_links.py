"""mkdocs hook: README's links keep working once its sections are included in the site.

Pages include README sections with ``pymdownx.snippets`` (``--8<-- "README.md:guarantees"``),
so the text keeps README's links, written for README's place in the repository:

- ``[sql/queries.sql](sql/queries.sql)``, a file of the repository: the site serves a copy of
  it under ``source/`` and the link points there (a folder becomes plain text: the site
  cannot list it). The same holds for a docs page linking ``../examples/...``.
- ``[Guarantees](#guarantees)``, a heading of README that now lives on another page: the link
  goes to that page. An anchor no page has is a warning, so ``mkdocs build --strict`` fails.
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path
from typing import Any

from markdown import Extension, Markdown
from markdown.preprocessors import Preprocessor
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

log = logging.getLogger("mkdocs.plugins.readme_links")

SERVED = "source"  # where copies of repository files live in the site
# [text](target) outside code spans; the target has no scheme and is not an anchor alone.
LINK = re.compile(r"(?<!`)\[([^\]\n]+)\]\((?![a-z][a-z0-9+.-]*:|#|/)([^)\s#]+)(#[^)\s]*)?\)")
HREF = re.compile(r'href="#([^"]+)"')
FENCE = re.compile(r"^\s*(```|~~~)")


class _Copy(File):
    """A repository file served as it is, Markdown included (not rendered as a page)."""

    def is_documentation_page(self) -> bool:
        return False


class _State:
    root = Path()
    docs = Path()
    page: Page | None = None
    anchors: dict[str, set[str]] = {}  # page url -> the ids of its headings


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
    _State.anchors = {}
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


def _ids(items: Any) -> set[str]:
    found: set[str] = set()
    for item in items:
        found.add(item.id)
        found |= _ids(item.children)
    return found


def on_page_content(html: str, page: Page, **kwargs: Any) -> str:
    _State.page = None
    _State.anchors[page.url] = _ids(page.toc) | set(re.findall(r'\bid="([^"]+)"', html))
    return html


def on_env(env: Any, config: MkDocsConfig, files: Files) -> Any:
    """Every page is rendered by now: point README's in-page anchors at their new pages."""
    for file in files.documentation_pages():
        page = file.page
        if page is not None and page.content is not None:
            page.content = _point_anchors(page.content, page)
    return env


def _point_anchors(html: str, page: Page) -> str:
    return HREF.sub(lambda match: _point(match, page), html)


def _point(match: re.Match[str], page: Page) -> str:
    anchor = match.group(1)
    if anchor in _State.anchors.get(page.url, set()):
        return match.group(0)
    homes = [url for url, ids in _State.anchors.items() if anchor in ids]
    if not homes:
        log.warning("%s links to #%s, which no page has", page.file.src_uri, anchor)
        return match.group(0)
    target = posixpath.relpath(homes[0] or ".", page.url or ".")
    return f'href="{target}/#{anchor}"'
