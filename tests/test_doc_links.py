"""README is the pitch, the two commands and links; the docs pages hold the rest. Their links
work where they are read in the repository (GitHub follows a link relative to the file that
holds it), and every test the docs cite exists. No mkdocs needed: tests/test_docs.py builds
the site."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import ROOT

DOCS = ROOT / "docs"
README = ROOT / "README.md"
FENCE = re.compile(r"^\s*(```|~~~)")
# [text](target#anchor), outside code spans; a target with a scheme is a web address.
LINK = re.compile(r"(?<!`)\[[^\]\n]+\]\((?![a-z][a-z0-9+.-]*:)([^)\s#]*)(?:#([^)\s]*))?\)")
HEADING = re.compile(r"^#{1,6} (.+?)\s*$")
CITED_TEST = re.compile(r"\btest_\w+\b(?!\.py)")


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.parts)


def _prose(path: Path) -> list[str]:
    """The lines of a Markdown file outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _slug(title: str) -> str:
    """A heading's anchor as GitHub makes it (mkdocs makes the same for these headings, and
    checks its own: ``validation`` in mkdocs.yml)."""
    text = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(m.group(1)) for line in _prose(path) if (m := HEADING.match(line))}


def _nav_pages() -> list[str]:
    return re.findall(r"^\s+- [^:\n]+: ([\w/.-]+\.md)$", (ROOT / "mkdocs.yml").read_text(), re.M)


def test_readme_is_the_pitch_the_two_commands_and_links() -> None:
    headings = [line for line in _prose(README) if line.startswith("## ")]
    assert headings == ["## Two commands", "## Documentation", "## Benchmarks", "## License"]
    # the two sections the site's pages include from README, each on a page
    markers = re.findall(r"<!-- --8<-- \[start:([\w-]+)\] -->", README.read_text())
    assert markers == ["pitch", "two-commands"]
    included = "\n".join(page.read_text() for page in _pages())
    for name in markers:
        assert f'--8<-- "README.md:{name}"' in included, name


def test_ci_runs_readmes_test_command_exactly() -> None:
    text = README.read_text()
    block = text[text.index("```sh", text.index("## Two commands")) :]
    lines = block[: block.index("```", 5)].splitlines()
    assert lines[1].startswith("python -m pip install -U pip"), lines[1]
    (test_command,) = [line for line in lines if line.endswith("&& pytest")]
    assert test_command == "pip install -e '.[all]' --group test && pytest"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci
    assert ci.index("python -m pip install --quiet --upgrade pip") < ci.index(test_command)


def test_readme_links_every_page_of_the_site() -> None:
    nav = _nav_pages()
    assert len(nav) == len(_pages()), "a page is missing from mkdocs.yml's nav, or README's list"
    linked = {m.group(1) for line in _prose(README) for m in LINK.finditer(line)}
    missing = [page for page in nav if f"docs/{page}" not in linked]
    assert not missing, f"README's Documentation section does not link {missing}"


def test_relative_links_resolve_to_files_and_headings_in_the_repository() -> None:
    broken = []
    for path in [README, *_pages()]:
        for line in _prose(path):
            for match in LINK.finditer(line):
                target, anchor = match.group(1), match.group(2)
                file = (path.parent / target).resolve() if target else path
                where = f"{path.relative_to(ROOT)}: {match.group(0)}"
                if not file.exists():
                    broken.append(f"{where} (no such file)")
                elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                    broken.append(f"{where} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_test_the_docs_cite_exists() -> None:
    defined = {
        name
        for source in (ROOT / "tests").rglob("*.py")
        for name in re.findall(r"^\s*(?:async )?def (test_\w+)", source.read_text(), re.M)
    }
    cited = {
        (path.relative_to(ROOT).as_posix(), name)
        for path in [README, *_pages()]
        for name in CITED_TEST.findall(path.read_text())
    }
    assert any(path == "docs/guarantees.md" for path, _ in cited)
    missing = sorted(f"{path}: {name}" for path, name in cited if name not in defined)
    assert not missing, "cited tests that do not exist:\n" + "\n".join(missing)
