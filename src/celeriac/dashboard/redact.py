"""Secrets masked in the text the dashboard shows or logs that it did not write itself: an
error's message (a client library may put the URL it failed to reach in it, password and all)
and an action's outcome.

The header shows the broker URL through :func:`celeriac.utils.urls.redact_url`; everything
else that can carry a URL goes through a :class:`Redactor`, which masks the password of any
``scheme://user:password@`` in the text and, anywhere in it, each password the app's own
settings hold (broker and backend URLs, ``password`` transport options), since a library may
quote one without its URL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from celeriac.app.base import Celeriac

MASK = "***"
#: ``scheme://user:password@``: the password part.
_URL_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^\s:/@]*:)([^\s@/]+)@", re.IGNORECASE)
#: A known secret shorter than this is not masked in free text (it would mask common words).
MIN_SECRET = 4


def _url_passwords(url: str | None) -> list[str]:
    found: list[str] = []
    for part in (url or "").split(";"):
        try:
            password = urlsplit(part.strip()).password
        except ValueError:
            continue
        if password:
            found += [password, unquote(password)]
    return found


def _option_passwords(options: Mapping[str, Any] | None) -> list[str]:
    found: list[str] = []
    for key, value in (options or {}).items():
        if isinstance(value, Mapping):
            found += _option_passwords(value)
        elif isinstance(value, str) and "password" in str(key).lower():
            found.append(value)
    return found


class Redactor:
    """Masks URL passwords and the given secrets in a text (see the module docstring)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # the longest first, so that a secret holding another is masked whole
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET}, key=len, reverse=True)

    @classmethod
    def of_app(cls, app: Celeriac) -> Redactor:
        conf = app.conf
        secrets = _url_passwords(app.broker_url) + _url_passwords(app.result_backend_url)
        secrets += _option_passwords(conf.broker_transport_options)
        secrets += _option_passwords(conf.result_backend_transport_options)
        return cls(secrets)

    def __call__(self, text: str) -> str:
        masked = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
        for secret in self.secrets:
            masked = masked.replace(secret, MASK)
        return masked
