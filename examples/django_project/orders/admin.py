"""Orders in the admin (celeriac's results and beat entries are in its own section)."""

from django.contrib import admin  # type: ignore[import-untyped]

from orders.models import Order

admin.site.register(Order)
