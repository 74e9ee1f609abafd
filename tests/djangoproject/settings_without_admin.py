"""The project without django.contrib.admin: pgqueue's app works the same, and registers no
admin (tests/test_django_admin.py)."""

from .settings import *  # noqa: F403
from .settings import INSTALLED_APPS

INSTALLED_APPS = [a for a in INSTALLED_APPS if a != "django.contrib.admin"]
