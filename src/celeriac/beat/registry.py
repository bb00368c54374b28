"""Which beat store an app's broker uses, by the broker URL's scheme.

Each store module has ``open_store(app) -> BeatStore`` (unopened). They are imported when first
needed, so a beat on Redis never imports the AMQP client, and the reverse.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from celeriac.errors import ImproperlyConfigured
from celeriac.utils.urls import redact_url

if TYPE_CHECKING:
    from celeriac.beat.store import BeatStore

#: Broker URL scheme -> the module holding that broker's store.
STORES: dict[str, str] = {
    "memory": "celeriac.beat.memory_store",
    "sqlite": "celeriac.beat.sqlite_store",
    "redis": "celeriac.beat.redis_store",
    "rediss": "celeriac.beat.redis_store",
    "unix": "celeriac.beat.redis_store",
    "redis+sentinel": "celeriac.beat.redis_store",
    "sentinel": "celeriac.beat.redis_store",
    "amqp": "celeriac.beat.amqp_store",
    "amqps": "celeriac.beat.amqp_store",
    "pyamqp": "celeriac.beat.amqp_store",
}


def open_store(app: Any) -> BeatStore:
    """The (unopened) beat store of ``app``'s broker."""
    url = app.broker_url
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    module_name = STORES.get(scheme)
    if module_name is None:
        raise ImproperlyConfigured(
            f"beat: no store for the broker {redact_url(url)!r}; beat runs on "
            f"{', '.join(sorted(set(STORES)))}"
        )
    store: BeatStore = importlib.import_module(module_name).open_store(app)
    return store
