"""``manage.py pgqueue worker|beat|migrate|status|...``: the ``pgqueue`` command line run
with the project's app (``-A pgqueue.contrib.django:app``) on its database."""

from __future__ import annotations

import argparse
import os
from typing import Any

import click
from django.core.management.base import BaseCommand, CommandError, CommandParser

from .....cli import main
from ...config import get_app

APP_SPEC = "pgqueue.contrib.django:app"


def forwarded(args: list[str], dsn: str) -> list[str]:
    """``args`` for the ``pgqueue`` command: ``--dsn`` (the project's database, unless
    given) first, and ``-A`` after the command when it takes one and is not given one."""
    i = 0
    given_dsn = False
    while i < len(args) and args[i].startswith("-"):  # the group's own options
        given_dsn = given_dsn or args[i].split("=", 1)[0] == "--dsn"
        i += 2 if args[i] == "--dsn" else 1
    out = [] if given_dsn else ["--dsn", dsn]
    if i < len(args):
        command = main.commands.get(args[i])
        rest = args[i + 1 :]
        takes_app = command is not None and any(p.name == "app_spec" for p in command.params)
        has_app = any(a in ("-A", "--app") or a.startswith(("--app=", "-A")) for a in rest)
        if takes_app and not has_app:
            return [*out, *args[: i + 1], "-A", APP_SPEC, *rest]
    return [*out, *args]


class Command(BaseCommand):
    help = (
        "pgqueue's command line with this project's app and database: "
        "`manage.py pgqueue worker`, `beat`, `migrate`, `status`, ... (`manage.py pgqueue "
        "--help` lists them)."
    )
    # A worker must start without a query run by the checks on a connection it would fork.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("args", nargs=argparse.REMAINDER)

    def run_from_argv(self, argv: list[str]) -> None:
        # Everything after `pgqueue` is the command line's own: click parses it (and prints
        # its help), Django's parser would refuse its options.
        prog = f"{os.path.basename(argv[0])} {argv[1]}"
        main.main(args=forwarded(argv[2:], get_app().dsn), prog_name=prog)

    def handle(self, *args: str, **options: Any) -> None:
        # call_command("pgqueue", "status"): click's errors as Django's.
        try:
            main.main(args=forwarded(list(args), get_app().dsn), standalone_mode=False)
        except click.ClickException as exc:
            raise CommandError(exc.format_message()) from None
