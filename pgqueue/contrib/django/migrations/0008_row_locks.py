"""pgqueue's SQL migration 0013 (limited claims serialized and the stats sample refreshed
under row locks only the worker role can take, and a worker's liveness lock counted only
when its own backend holds it, instead of advisory locks any role could hold), for
``manage.py migrate``: as 0001, every pgqueue migration not yet applied."""

from __future__ import annotations

from django.db import migrations

from ..schema import apply_schema

# The pgqueue SQL migration this Django migration brings the schema to: every one up to 13.
SQL_VERSION = 13


class Migration(migrations.Migration):
    # pgqueue's migration commits on its own connection, under its own lock.
    atomic = False
    dependencies = [("pgqueue", "0007_workflow_retry")]
    operations = [migrations.RunPython(apply_schema, migrations.RunPython.noop, elidable=False)]
