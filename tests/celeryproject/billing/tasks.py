from pgqueue import shared_task  # was: from celery import shared_task


@shared_task
def total(amounts):
    return sum(amounts)


@shared_task(name="billing.refund", ignore_result=False)
def refund(order_id):
    return f"refunded {order_id}"
