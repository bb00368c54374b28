"""The web dashboard, ``celeriac dashboard``: live workers, task history and search, queues,
dead letters, beat, actions with an audit log, and Prometheus metrics, in one ASGI app.

Built on what the rest of celeriac already speaks: events (:mod:`celeriac.events`) folded by
:mod:`.ingest` into a bounded state, the history file (:mod:`.store`) and the metrics
(:mod:`.metrics`); remote control and the beat API for actions (:mod:`.actions`); the
transport for queue depths and dead letters (:mod:`.cluster`, :mod:`.deadletters`). The pages
(:mod:`.routes`, :mod:`.web`, ``templates/``) are rendered on the server and kept live by
server-sent events (:mod:`.live`) with one small script and no build step.

Needs the ``dashboard`` bundle: ``pip install 'celeriac[dashboard]'`` (Starlette, uvicorn,
Jinja2, prometheus-client). Only this package imports them.
"""

from __future__ import annotations
