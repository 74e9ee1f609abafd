from django.db import transaction
from django.http import HttpRequest, JsonResponse

from .models import Order
from .tasks import confirm


class PaymentRefused(Exception):
    pass


def create_order(request: HttpRequest) -> JsonResponse:
    """The row and the job in one atomic block, with no connection= anywhere."""
    with transaction.atomic():
        order = Order.objects.create(number=request.POST["number"])
        result = confirm.delay(order.pk)
        if request.POST.get("refuse"):
            raise PaymentRefused(order.number)
    return JsonResponse({"order": order.pk, "job": result.id})


def create_order_without_atomic(request: HttpRequest) -> JsonResponse:
    order = Order.objects.create(number=request.POST["number"])
    result = confirm.delay(order.pk)
    return JsonResponse({"order": order.pk, "job": result.id})
