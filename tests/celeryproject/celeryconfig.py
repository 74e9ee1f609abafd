"""Settings in Django's style: CELERY_-prefixed, read with namespace="CELERY"."""

from pgqueue import crontab  # was: from celery.schedules import crontab

CELERY_BROKER_URL = "redis://localhost:6379/0"
CELERY_RESULT_BACKEND = "redis://localhost:6379/1"
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "Europe/Berlin"
CELERY_ENABLE_UTC = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_ROUTES = {"tests.celeryproject.orders.tasks.*": {"queue": "orders"}}
CELERY_BEAT_SCHEDULE = {
    "nightly-total": {
        "task": "tests.celeryproject.billing.tasks.total",
        "schedule": crontab(minute=0, hour=3),
        "args": ([1, 2],),
    }
}
DEBUG = True  # not a Celery setting: left alone
