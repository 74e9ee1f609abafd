"""Where a Celery-style project keeps its configuration and its tasks: a config object or
module (``app.config_from_object``) and packages' ``tasks`` modules
(``app.autodiscover_tasks``)."""

from __future__ import annotations

import importlib
import types
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .celery_settings import CELERY_SETTINGS, judge, new_name
from .conf import DEFAULTS, Settings, is_setting
from .exceptions import ConfigurationError, IgnoredSettingWarning


def load_object(obj: Any) -> Any:
    """``obj`` itself, or what a dotted name names: ``"proj.celeryconfig"`` (a module),
    ``"proj.settings:Config"`` or ``"proj.settings.Config"`` (an attribute of one)."""
    if not isinstance(obj, str):
        return obj
    module_name, _, attribute = obj.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if attribute or "." not in module_name or exc.name != module_name:
            raise ConfigurationError(f"cannot import the configuration {obj!r}: {exc}") from exc
        module_name, _, attribute = module_name.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as inner:
            raise ConfigurationError(f"cannot import the configuration {obj!r}: {inner}") from inner
    if not attribute:
        return module
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(f"{module_name!r} has no attribute {attribute!r}") from None


def _items(source: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(source, Mapping):
        return source.items()
    return ((name, getattr(source, name)) for name in dir(source))


def settings_of(source: Any, namespace: str | None = None) -> dict[str, Any]:
    """The settings an object, module or dict gives, by lower-case name.

    As in Celery: with a ``namespace`` (``"CELERY"``) only names with that prefix count
    (``CELERY_TASK_ROUTES``), so a Django settings module's other names are left alone;
    without one, lower-case setting names and Celery's old upper-case names count. Other
    names (imports, helpers, ``DEBUG``) are not settings and are skipped.
    """
    found: dict[str, Any] = {}
    prefix = f"{namespace.upper()}_" if namespace else None
    for key, value in _items(source):
        if not isinstance(key, str) or key.startswith("_"):
            continue
        if prefix is not None:
            name = new_name(key, is_setting, namespace) if key.startswith(prefix) else None
            if name is not None:  # unknown names are reported by check-celery-config
                found[name] = value
            continue
        if key.isupper():
            name = new_name(key, is_setting)
            if name is not None:
                found[name] = value
        elif is_setting(key) and not isinstance(value, types.ModuleType):
            found[key] = value
    return found


def unknown_names(source: Any, namespace: str | None = None) -> list[str]:
    """Names in ``source`` that look like settings but are none (for check-celery-config)."""
    prefix = f"{namespace.upper()}_" if namespace else "CELERY_"
    return sorted(
        key
        for key, value in _items(source)
        if isinstance(key, str)
        and key.startswith(prefix)
        and not callable(value)
        and new_name(key, is_setting, namespace) is None
    )


def _django_apps() -> list[str]:
    """Django's installed apps, as Celery's autodiscover_tasks() with no packages uses."""
    try:
        from django.apps import apps
    except ImportError:
        ready = False
    else:
        ready = apps.ready
    if not ready:
        raise ConfigurationError(
            "autodiscover_tasks() with no packages looks in Django's installed apps, and "
            "Django is not set up here: give the packages, "
            "app.autodiscover_tasks(['proj.orders', 'proj.billing'])"
        )
    return [config.name for config in apps.get_app_configs()]


Packages = Iterable[str] | Callable[[], Iterable[str]] | None


def discover_tasks(packages: Packages, related_name: str = "tasks") -> list[str]:
    """Import the ``<package>.<related_name>`` modules that exist; returns their names.

    ``packages`` may be a callable returning them (called now: Django's
    ``lambda: settings.INSTALLED_APPS``, read once the settings are loaded). A package
    without such a module is skipped; a missing package, or an error inside a module, is
    raised, not hidden.
    """
    names = packages() if callable(packages) else packages
    if names is None:
        names = _django_apps()
    if isinstance(names, str):
        raise ConfigurationError(
            f"autodiscover_tasks wants a list of packages, got the string {names!r}"
        )
    found = []
    for package in names:
        module = f"{package}.{related_name}" if related_name else package
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # Only the absence of that very module means "no tasks here".
            if exc.name != module:
                raise ConfigurationError(
                    f"autodiscover_tasks: cannot import {module}: {exc}"
                ) from exc
            continue
        found.append(module)
    return found


@dataclass(frozen=True)
class Finding:
    """A setting a project uses that pgqueue does not honour, and why."""

    name: str
    status: str  # "ignored", "refused" or "unknown"
    reason: str


def check(settings: Mapping[str, Any], unknown: Iterable[str] = ()) -> list[Finding]:
    """What ``pgqueue check-celery-config`` reports for these settings, by name."""
    findings = [Finding(key, "unknown", "no Celery or pgqueue setting") for key in unknown]
    for name, value in settings.items():
        if name in DEFAULTS or name not in CELERY_SETTINGS:
            continue
        setting, harmless = judge(name, value)
        if setting.status != "supported" and not harmless:
            findings.append(Finding(name, setting.status, setting.note))
    return sorted(findings, key=lambda f: f.name)


def warn_broker_backend(broker: str | None, backend: str | None) -> None:
    """The one warning for Celery's ``broker=`` and ``backend=`` constructor arguments."""
    if broker is not None or backend is not None:
        warnings.warn(
            "pgqueue's broker and result backend are PostgreSQL (dsn= or PGQUEUE_DSN): "
            "broker= and backend= are ignored",
            IgnoredSettingWarning,
            stacklevel=3,
        )


class CeleryConfiguration:
    """Celery's ways of configuring an app and finding its tasks; ``PgQueue`` has them."""

    conf: Settings
    _discover: list[tuple[Packages, str]]

    def config_from_object(self, obj: Any, namespace: str | None = None) -> None:
        """Read settings from a module, class, object or dict, or from a dotted name of one
        (``"proj.celeryconfig"``, ``"django.conf:settings"``), as in Celery.

        With ``namespace="CELERY"`` only ``CELERY_``-prefixed names are read
        (``CELERY_TASK_ROUTES``); without, lower-case setting names and Celery's old
        upper-case ones. Each goes through ``app.conf`` (see ``pgqueue.celery_settings``).
        """
        self.conf.update(settings_of(load_object(obj), namespace))

    def autodiscover_tasks(
        self, packages: Packages = None, related_name: str = "tasks", force: bool = False
    ) -> None:
        """Find tasks in the ``tasks`` module of each package (Celery's autodiscovery).

        ``packages`` is a list, or a callable returning one (Django's
        ``lambda: settings.INSTALLED_APPS``). The modules are imported when the worker
        loads its tasks (``import_task_modules``), or now with ``force=True``.
        """
        if force:
            discover_tasks(packages, related_name)
        else:
            self._discover.append((packages, related_name))

    def import_discovered(self) -> None:
        """Import the modules ``autodiscover_tasks`` asked for."""
        for packages, related_name in self._discover:
            discover_tasks(packages, related_name)
