"""Found by autodiscovery: the worker imports every installed app's tasks module."""

import os

from pgqueue.contrib.django import app

from .models import Order


@app.task
def confirm(order_id: int) -> str:
    # The ORM in a worker process (a prefork child): Django is set up there.
    order = Order.objects.get(pk=order_id)
    order.confirmed_by = os.getpid()
    order.save()
    return order.number


@app.task(sensitive=True)
def charge(card_number: str, amount: int) -> int:
    # Its arguments never show in the admin (tests/test_django_admin.py).
    return amount
