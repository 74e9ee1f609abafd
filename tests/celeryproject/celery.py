"""The project's app module, Celery's proj/celery.py layout."""

from pgqueue import Celery  # was: from celery import Celery

app = Celery("celeryproject", broker="redis://localhost:6379/0", backend="redis://localhost")
app.config_from_object("tests.celeryproject.celeryconfig", namespace="CELERY")
app.autodiscover_tasks(
    ["tests.celeryproject.orders", "tests.celeryproject.billing", "tests.celeryproject.nothing"]
)
