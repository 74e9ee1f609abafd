"""pgqueue's SQL migration 0010 (each migration declares which older pgqueue keeps working),
for ``manage.py migrate``: as 0001, every pgqueue migration not yet applied."""

from __future__ import annotations

from django.db import migrations

from ..schema import apply_schema

# The pgqueue SQL migration this Django migration brings the schema to: every one up to 10.
SQL_VERSION = 10


class Migration(migrations.Migration):
    # pgqueue's migration commits on its own connection, under its own lock.
    atomic = False
    dependencies = [("pgqueue", "0003_queue_controls")]
    operations = [migrations.RunPython(apply_schema, migrations.RunPython.noop, elidable=False)]
