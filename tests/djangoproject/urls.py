from django.apps import apps
from django.urls import path

from .shop import views

urlpatterns = [
    path("orders", views.create_order),
    path("orders/autocommit", views.create_order_without_atomic),
]

if apps.is_installed("django.contrib.admin"):
    from django.contrib import admin

    urlpatterns.append(path("admin/", admin.site.urls))
