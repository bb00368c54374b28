"""The app layer: ``Celeriac`` (``base``), its settings (``config``), the sending side
(``producer``, ``batch``), worker components declared on it (``components``) and finding an app
by name (``loader``, for ``-A`` and prefork children)."""

from celeriac.app.base import Celeriac

__all__ = ["Celeriac"]
