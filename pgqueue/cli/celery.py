"""``pgqueue check-celery-config``: which settings of a Celery project pgqueue does not
honour, before the project is moved over."""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import click

from .. import config
from ..app import PgQueue
from ..exceptions import ConfigurationError


def _findings(target: Any, namespace: str | None) -> list[config.Finding]:
    apps = [target] if isinstance(target, PgQueue) else []
    if not apps:
        apps = [v for v in getattr(target, "__dict__", {}).values() if isinstance(v, PgQueue)]
    if apps:  # an app module: what its apps were given and ignore
        return config.check({k: v for app in apps for k, v in app.conf.ignored.items()})
    settings = config.settings_of(target, namespace)
    return config.check(settings, config.unknown_names(target, namespace))


@click.command("check-celery-config")
@click.argument("module")
@click.option(
    "--namespace",
    help="Prefix of the setting names, as given to config_from_object (e.g. CELERY).",
)
def check_celery_config(module: str, namespace: str | None) -> None:
    """Report the settings of a Celery-style config module, or of an app module, that
    pgqueue does not honour: one line each with the reason. Exit code 1 if any is refused.

    MODULE is a dotted name (proj.celeryconfig), or module:attribute for a config class or
    an app (proj.celery:app).
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # each ignored setting is reported below instead
        try:
            findings = _findings(config.load_object(module), namespace)
        except ConfigurationError as exc:
            # an app module refusing a setting at import, or a namespace name unknown
            click.echo(f"refused: {exc}")
            sys.exit(1)
    for finding in findings:
        click.echo(f"{finding.name}: {finding.status} - {finding.reason}")
    if not findings:
        click.echo(f"{module}: every setting is honoured by pgqueue")
    sys.exit(1 if any(f.status == "refused" for f in findings) else 0)
