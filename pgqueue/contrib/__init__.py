"""Integrations with the frameworks pgqueue's users already run: :mod:`.django` (an app for
``INSTALLED_APPS``, extra ``pgqueue-tasks[django]``) and :mod:`.sqlalchemy` (``connection=``
a SQLAlchemy ``Session`` or ``Connection``, extra ``pgqueue-tasks[sqlalchemy]``)."""
