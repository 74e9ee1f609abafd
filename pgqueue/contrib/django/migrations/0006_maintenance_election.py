"""pgqueue's SQL migration 0011 (maintenance passes elected through pgqueue.maintenance
instead of advisory locks), for ``manage.py migrate``: as 0001, every pgqueue migration not
yet applied."""

from __future__ import annotations

from django.db import migrations

from ..schema import apply_schema

# The pgqueue SQL migration this Django migration brings the schema to: every one up to 11.
SQL_VERSION = 11


class Migration(migrations.Migration):
    # pgqueue's migration commits on its own connection, under its own lock.
    atomic = False
    dependencies = [("pgqueue", "0005_admin_models")]
    operations = [migrations.RunPython(apply_schema, migrations.RunPython.noop, elidable=False)]
