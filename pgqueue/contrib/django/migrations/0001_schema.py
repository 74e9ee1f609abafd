"""pgqueue's SQL schema, so that ``manage.py migrate`` is enough: every pgqueue migration
(``sql/migrations``) not yet applied, under pgqueue's advisory lock, in the database jobs are
written to. Idempotent with ``pgqueue migrate`` and ``manage.py pgqueue migrate``; unapplying
it leaves the schema (and the jobs) in place."""

from __future__ import annotations

from django.db import migrations

from ..schema import apply_schema

# The pgqueue SQL migration this Django migration brings the schema to; a pgqueue that ships
# a newer SQL migration ships a Django migration for it (tests/test_django.py checks).
SQL_VERSION = 6


class Migration(migrations.Migration):
    # pgqueue's migration commits on its own connection, under its own lock.
    atomic = False
    initial = True
    dependencies = []
    operations = [migrations.RunPython(apply_schema, migrations.RunPython.noop, elidable=False)]
