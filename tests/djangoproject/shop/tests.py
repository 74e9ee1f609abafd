"""Run by Django's test runner (tests/test_django.py runs `manage.py test`): pgqueue's schema
is in the test database, and enqueues go there."""

from django.db import connection
from django.test import TestCase

from .tasks import confirm


class EnqueueInTestDatabase(TestCase):
    def test_the_job_is_written_in_the_test_database(self) -> None:
        confirm.delay(1)
        with connection.cursor() as cur:
            cur.execute("SELECT current_database(), count(*) FROM pgqueue.jobs")
            name, count = cur.fetchone()
        self.assertTrue(name.startswith("test_"), name)
        self.assertEqual(count, 1)
