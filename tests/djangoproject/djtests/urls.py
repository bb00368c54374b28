"""The test project's URLs: the shop's view and the admin."""

from __future__ import annotations

from django.contrib import admin  # type: ignore[import-untyped]
from django.urls import path  # type: ignore[import-untyped]

from djtests.shop.views import create_order

urlpatterns = [
    path("orders/<str:alias>/", create_order),
    path("admin/", admin.site.urls),
]
