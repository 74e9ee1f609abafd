"""mkdocs hook: the command-line reference is click's own help, rendered at build time.

A page holding the line ``<!-- pgqueue-cli-help -->`` gets, in its place, one section per
``pgqueue`` command (groups first, then their subcommands) with the text ``pgqueue ... --help``
prints, so the page cannot drift from the options the code accepts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import click

from pgqueue.cli import main

PLACEHOLDER = "<!-- pgqueue-cli-help -->"
WIDTH = 78  # help wrapped to fit the page, whatever the build machine's terminal is


def _commands(
    command: click.Command, parent: click.Context | None, name: str
) -> Iterator[tuple[str, str]]:
    """``(full command name, help text)`` for ``command`` and, if a group, its subcommands."""
    settings = {**command.context_settings, "max_content_width": WIDTH}
    ctx = click.Context(command, parent=parent, info_name=name, **settings)
    ctx.terminal_width = WIDTH
    yield ctx.command_path, command.get_help(ctx)
    if isinstance(command, click.Group):
        for sub in command.list_commands(ctx):
            found = command.get_command(ctx, sub)
            if found is not None and not found.hidden:
                yield from _commands(found, ctx, sub)


def render() -> str:
    """Markdown: a heading and the help text of every command."""
    parts = []
    for path, text in _commands(main, None, "pgqueue"):
        parts.append(f"## `{path}`\n\n```text\n{text}\n```\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if PLACEHOLDER not in markdown:
        return markdown
    return markdown.replace(PLACEHOLDER, render())
