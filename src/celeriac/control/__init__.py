"""Remote control: ``app.control`` (Celery's client, with replies) and the pidbox wire layout.

* :mod:`.pidbox`: requests and replies as Celery lays them out, and the Lamport clock;
* :mod:`.calls`: one call on a transport (publish, gather replies until the limit or timeout);
* :mod:`.client`: :class:`Control`, the synchronous client every app has as ``app.control``;
* :mod:`.inspect`: :class:`Inspect`, ``app.control.inspect()``;
* :mod:`.revokes` (and ``revokes_sqlite``, ``revokes_redis``, ``revokes_amqp``): revokes kept
  on the broker until they expire.

The worker's side (the mailbox that answers) is :mod:`celeriac.worker.control`.
"""

from celeriac.control.client import Control
from celeriac.control.inspect import Inspect, flatten_reply
from celeriac.control.pidbox import ControlRequest, LamportClock, Mailbox

__all__ = ["Control", "ControlRequest", "Inspect", "LamportClock", "Mailbox", "flatten_reply"]
