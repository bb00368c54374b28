"""The embedded default broker: one SQLite file (``sqlite:///path``), durable, no server.

``transport`` is the :class:`~celeriac.transports.base.Transport`; ``db`` the schema, its
migrations and the connection set-up; ``transient`` the fan-out of events and control requests
(a log written only while someone listens).
"""

from celeriac.transports.sqlite.transport import SQLiteTransport, database_path, open_database

__all__ = ["SQLiteTransport", "database_path", "open_database"]
