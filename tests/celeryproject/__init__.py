"""A Celery-style project, as written for Celery but for the imports (each says what it
replaced): tests/test_celery_compat.py runs it on a real pgqueue worker."""
