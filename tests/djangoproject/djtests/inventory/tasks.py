"""A tasks module only ``autodiscover_tasks()`` imports (the test removes it between runs)."""

from __future__ import annotations

from celeriac import shared_task


@shared_task(name="inventory.count")
def count() -> int:
    return 42
