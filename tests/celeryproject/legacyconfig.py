"""A Celery 3-era config module: old upper-case names, a pickle serializer."""

BROKER_URL = "amqp://guest@localhost//"
CELERY_ROUTES = {"tests.celeryproject.orders.tasks.place": {"queue": "orders"}}
CELERYD_CONCURRENCY = 2
CELERY_TASK_SERIALIZER = "pickle"
CELERY_ACCEPT_CONTENT = ["pickle", "json"]
CELERY_TYPO_SETTING = 3
