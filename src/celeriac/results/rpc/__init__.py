"""The ``rpc://`` result backend: results as replies on the caller's own queue.

``backend`` is the :class:`~celeriac.results.base.Backend`; ``link`` the reply connection that
survives a broker restart; ``replies`` the in-memory table that ``get()`` waits on.
"""

from celeriac.results.rpc.backend import RPCBackend

__all__ = ["RPCBackend"]
