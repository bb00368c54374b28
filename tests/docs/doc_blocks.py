"""The fenced code blocks of the documentation, read as the snippet test runs them.

A block is a fence (```` ``` ```` or ``~~~``, at any indent, as in a list item) with a language
and optional attributes in its info string (```` ```python title="tasks.py" ````, which Material
shows as the block's title). The line just before the fence (blank lines between are allowed)
may be an HTML comment that says how the test treats it, invisible on the rendered page::

    <!-- snippet: worker -->                  python: start a worker thread for ``app`` first
    <!-- snippet: worker app=shop pool=asyncio -->
    <!-- snippet: run -->                     shell: run it (bash -e) in the page's directory
    <!-- snippet: background ready="ready" -->  shell: start it, stop it (SIGTERM) at the end
    <!-- snippet: needs=redis,amqp -->        the servers the block uses (missing: skipped,
                                              or failed under CELERIAC_REQUIRE_SERVICES=1)
    <!-- snippet: skip reason="..." -->       not run, with why (counted and reported)

What each language gets is decided by :data:`KINDS`; a language not listed there fails the test,
so that no sample goes unchecked by accident.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: Language (the info string's first word) -> how the block is checked.
KINDS = {
    "python": "python",
    "py": "python",
    "sh": "shell",
    "bash": "shell",
    "shell": "shell",
    "console": "shell",
    "yaml": "yaml",
    "yml": "yaml",
    "ini": "ini",
    "systemd": "ini",
    "toml": "toml",
    "json": "json",
    # not code: diagrams, sample output, log lines; shown as they are
    "": "text",
    "text": "text",
    "output": "text",
    "promql": "text",
}

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
MARKER = re.compile(r"^\s*<!--\s*snippet:(?P<body>.*?)-->\s*$")


@dataclass
class Block:
    """One fenced block: where it is, its language and attributes, its text, its marker."""

    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    attrs: dict[str, str]
    text: str
    marker: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return KINDS.get(self.language, "unknown")

    @property
    def where(self) -> str:
        shown = self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path
        return f"{shown}:{self.line}"

    @property
    def title(self) -> str | None:
        return self.attrs.get("title")


def parse_words(text: str) -> dict[str, str]:
    """``a b=c d="e f"`` -> ``{"a": "", "b": "c", "d": "e f"}``."""
    words: dict[str, str] = {}
    for word in shlex.split(text):
        key, _, value = word.partition("=")
        words[key] = value
    return words


def blocks_of(path: Path) -> list[Block]:
    """Every fenced block of one Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    marker: dict[str, str] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        seen = MARKER.match(line)
        if seen:
            marker = parse_words(seen.group("body"))
            i += 1
            continue
        opening = FENCE.match(line)
        if not opening:
            if line.strip():
                marker = None  # a marker applies to the very next block only
            i += 1
            continue
        indent, fence = opening.group("indent"), opening.group("fence")
        info = opening.group("info").strip()
        language, _, rest = info.partition(" ")
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            candidate = lines[j]
            stripped = candidate.strip()
            if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
                break
            body.append(candidate[len(indent) :] if candidate.startswith(indent) else candidate)
            j += 1
        else:
            raise ValueError(f"{path}:{i + 1}: a fence that is never closed")
        found.append(
            Block(
                path=path,
                line=i + 1,
                language=language.lower(),
                attrs=parse_words(rest) if rest else {},
                text="\n".join(body) + "\n",
                marker=marker or {},
            )
        )
        marker = None
        i = j + 1
    return found


def documentation_pages() -> list[Path]:
    """The pages whose samples run: every Markdown file under docs/, and README.md."""
    pages = sorted((REPO / "docs").rglob("*.md"))
    return [REPO / "README.md", *pages]


def strip_comments(text: str) -> str:
    """The shell text without its comments: a ``#`` that starts a word, outside quotes, to the
    end of its line (quotes may span lines; a comment's apostrophe is no quote)."""
    out: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(text):
        char = text[i]
        if quote is None and char == "#" and (i == 0 or text[i - 1] in " \t\n;&|("):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        if char == "\\" and quote != "'" and i + 1 < len(text):
            out.append(text[i : i + 2])
            i += 2
            continue
        if char in "'\"" and quote in (None, char):
            quote = None if quote == char else char
        out.append(char)
        i += 1
    return "".join(out)


def shell_commands(text: str) -> list[list[str]]:
    """The commands of a shell block as argument lists: continuation lines joined, comments
    and environment assignments dropped, each ``&&``/``;``/``|`` part a command of its own.
    Only a rough reading, to find the ``celeriac`` commands in it (bash itself checks syntax)."""
    joined = re.sub(r"\\\n", " ", strip_comments(text))
    lexer = shlex.shlex(joined, posix=True, punctuation_chars=";&|\n")
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    lexer.commenters = ""  # stripped above: shlex's would swallow the newline ending them
    commands: list[list[str]] = []
    current: list[str] = []
    for token in lexer:
        if token and set(token) <= set(";&|\n"):
            if current:
                commands.append(current)
            current = []
            continue
        current.append(token)
    if current:
        commands.append(current)
    cleaned = []
    for words in commands:
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words = words[1:]  # VAR=value before the command
        if words:
            cleaned.append(words)
    return cleaned


def celeriac_args(words: list[str]) -> list[str] | None:
    """The arguments given to celeriac's command line by this command, or None if it is not
    one (``celeriac ...``, ``python -m celeriac ...``, ``.venv/bin/celeriac ...``)."""
    if not words:
        return None
    if Path(words[0]).name == "celeriac":
        return words[1:]
    if Path(words[0]).name.startswith("python") and words[1:3] == ["-m", "celeriac"]:
        return words[3:]
    return None
