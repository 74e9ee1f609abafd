"""The admin's models of pgqueue.jobs, pgqueue.results and pgqueue.periodic_tasks
(models.py), recorded in Django's migration state. Unmanaged: no SQL runs here, the tables are
pgqueue's own. Without this migration `makemigrations` would keep asking for one."""

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("pgqueue", "0004_compatible_from"),
    ]

    operations = [
        migrations.CreateModel(
            name="Job",
            fields=[
                ("id", models.UUIDField(primary_key=True, serialize=False)),
                ("task_name", models.TextField()),
                ("queue", models.TextField()),
                ("state", models.TextField()),
                ("args", models.JSONField()),
                ("kwargs", models.JSONField()),
                ("priority", models.IntegerField()),
                ("enqueued_at", models.DateTimeField()),
                ("run_at", models.DateTimeField()),
                ("expires_at", models.DateTimeField(null=True)),
                ("claimed_at", models.DateTimeField(null=True)),
                ("started_at", models.DateTimeField(null=True)),
                ("retries", models.IntegerField()),
                ("max_retries", models.IntegerField(null=True)),
                ("attempt", models.IntegerField()),
                ("worker_id", models.UUIDField(null=True)),
                ("exc_type", models.TextField(null=True)),
                ("exc_message", models.TextField(null=True)),
                ("traceback", models.TextField(null=True)),
            ],
            options={
                "db_table": 'pgqueue"."jobs',
                "ordering": ["-enqueued_at"],
                "managed": False,
            },
        ),
        migrations.CreateModel(
            name="PeriodicTask",
            fields=[
                ("name", models.TextField(primary_key=True, serialize=False)),
                ("task_name", models.TextField()),
                ("cron", models.TextField(null=True)),
                ("interval_seconds", models.FloatField(null=True)),
                ("timezone", models.TextField()),
                ("args", models.JSONField()),
                ("kwargs", models.JSONField()),
                ("queue", models.TextField(null=True)),
                ("enabled", models.BooleanField()),
                ("declared_in_code", models.BooleanField()),
                ("next_run_at", models.DateTimeField(null=True)),
                ("last_run_at", models.DateTimeField(null=True)),
                ("total_run_count", models.BigIntegerField()),
                ("start_at", models.DateTimeField(null=True)),
                ("end_at", models.DateTimeField(null=True)),
            ],
            options={
                "db_table": 'pgqueue"."periodic_tasks',
                "ordering": ["name"],
                "managed": False,
            },
        ),
        migrations.CreateModel(
            name="Result",
            fields=[
                ("task_id", models.UUIDField(primary_key=True, serialize=False)),
                ("task_name", models.TextField()),
                ("queue", models.TextField()),
                ("state", models.TextField()),
                ("result", models.JSONField(null=True)),
                ("exc_type", models.TextField(null=True)),
                ("exc_message", models.TextField(null=True)),
                ("traceback", models.TextField(null=True)),
                ("retries", models.IntegerField()),
                ("args", models.JSONField(null=True)),
                ("kwargs", models.JSONField(null=True)),
                ("worker", models.TextField(null=True)),
                ("date_started", models.DateTimeField(null=True)),
                ("date_done", models.DateTimeField()),
                ("time_taken", models.FloatField(null=True)),
                ("expires_at", models.DateTimeField(null=True)),
            ],
            options={
                "db_table": 'pgqueue"."results',
                "ordering": ["-date_done"],
                "managed": False,
            },
        ),
    ]
