from pgqueue import shared_task  # was: from celery import shared_task


class PaymentGatewayDown(ConnectionError):
    pass


@shared_task(
    bind=True,
    autoretry_for=(PaymentGatewayDown,),
    retry_backoff=1,
    retry_backoff_max=2,
    retry_jitter=False,
    max_retries=5,
)
def place(self, order_id, fail_times=0):
    """Fails its first ``fail_times`` attempts; autoretry_for retries it with backoff."""
    if self.request.retries < fail_times:
        raise PaymentGatewayDown(f"attempt {self.request.retries}")
    return {"order": order_id, "retries": self.request.retries, "queue": self.request.queue}
