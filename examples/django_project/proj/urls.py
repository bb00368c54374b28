"""URLs: the orders API and the admin."""

from django.contrib import admin  # type: ignore[import-untyped]
from django.urls import path  # type: ignore[import-untyped]
from django.views.decorators.csrf import csrf_exempt  # type: ignore[import-untyped]
from orders import views

urlpatterns = [
    # an API for curl, without a CSRF token; keep CSRF on for browser forms
    path("orders/", csrf_exempt(views.create_order)),
    path("orders/<int:order_id>/", views.order_status),
    path("admin/", admin.site.urls),
]
