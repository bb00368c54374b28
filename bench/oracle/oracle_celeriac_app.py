"""celeriac's side of the oracle, imported by ``celeriac -A oracle_celeriac_app worker``."""

from __future__ import annotations

from oracle_tasks import REDIS_URL, declare

from celeriac import Celeriac, chain

app = Celeriac("oracle", broker=REDIS_URL, backend=REDIS_URL)
t = declare(app, chain)
