"""pgqueue's SQL migrations 0007 (workflows) and 0008 (queue controls: paused and limited
queues, unique jobs, limited claims), for ``manage.py migrate``: as 0001, every pgqueue
migration not yet applied. (Both came after 0009 was shipped: a schema at 9 gets them
here.)"""

from __future__ import annotations

from django.db import migrations

from ..schema import apply_schema

# The pgqueue SQL migration this Django migration brings the schema to: every one up to 9.
SQL_VERSION = 9


class Migration(migrations.Migration):
    # pgqueue's migration commits on its own connection, under its own lock.
    atomic = False
    dependencies = [("pgqueue", "0002_schedule_bounds")]
    operations = [migrations.RunPython(apply_schema, migrations.RunPython.noop, elidable=False)]
