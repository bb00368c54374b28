"""The embedded default broker: one SQLite file (``sqlite:///path``), durable, no server.

``transport`` is the :class:`~celeriac.transports.base.Transport`; ``db`` the schema, its
migrations and the connection set-up.
"""

from celeriac.transports.sqlite.transport import SQLiteTransport, database_path, open_database

__all__ = ["SQLiteTransport", "database_path", "open_database"]
