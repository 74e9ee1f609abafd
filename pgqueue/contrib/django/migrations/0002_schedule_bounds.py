"""pgqueue's SQL migration 0009 (periodic tasks' start_at and end_at, one-off entries), for
``manage.py migrate``: as 0001, every pgqueue migration not yet applied."""

from __future__ import annotations

from django.db import migrations

from ..schema import apply_schema

# The pgqueue SQL migration this Django migration brings the schema to.
SQL_VERSION = 9


class Migration(migrations.Migration):
    # pgqueue's migration commits on its own connection, under its own lock.
    atomic = False
    dependencies = [("pgqueue", "0001_schema")]
    operations = [migrations.RunPython(apply_schema, migrations.RunPython.noop, elidable=False)]
