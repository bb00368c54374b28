"""MkDocs hook: celeriac's docstrings write Sphinx roles (``:class:`~celeriac.x.Y```), which
mkdocstrings renders as text; this shows them as the code they name (``Y``, or the full path
without the ``~``), as Sphinx would, without links (an unresolved link fails a strict build)."""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:mod|class|meth|func|data|attr|exc|obj):<code>(~?)([^<]*)</code>")


def _shown(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    if short:
        target = target.rsplit(".", 1)[-1]
    return f"<code>{target}</code>"


def on_page_content(html: str, **_: Any) -> str:
    return ROLE.sub(_shown, html)
