"""Parsing one crontab field (``"*/15"``, ``"mon-fri"``, ``"1,13,30-45,50-59/2"``) to its values.

Celery's grammar, checked strictly so that a mistake fails where the crontab is declared, naming
the field and the value (Celery accepts some typos and silently drops the rest of the part)::

    groups  ::= part ("," part)*
    part    ::= "*" | value | value "-" value | ("*" | value "-" value) "/" step
    value   ::= digits | name           names: day_of_week sun..sat, month_of_year jan..dec
    step    ::= digits (at least 1)

As in Celery: Sunday is 0 and 7 is refused; a range may wrap (``"fri-mon"`` is Friday to Monday,
``"22-2"`` 22:00 to 02:00) and a step then counts along the wrapped range (``"sat-tue/2"`` is
Saturday and Monday); a step needs ``*`` or a range before it (``"5/15"`` is refused); a name is
its first three letters or more of the full name, in any case (``"mon"``, ``"Monday"``).
Stricter than Celery: a name counts only in its own field (Celery reads ``minute="jan"`` as 1),
``"monkey"`` is not Monday, and ``"1-5/2/3"`` is refused (Celery ignores ``/3``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from celeriac.schedules.errors import ScheduleError

__all__ = ["FIELDS", "CronField", "Cronspec", "ScheduleError", "parse_field", "spec_text"]

#: What a crontab field accepts: an int, a string expression, or an iterable of ints.
Cronspec = int | str | Iterable[int]


_DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)


@dataclass(frozen=True)
class CronField:
    """One of the five fields: its name, its range, and the names its values may take."""

    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    note: str = ""

    def named(self, word: str) -> int | None:
        """The value a day or month name stands for, or None if it is not one of this field's."""
        word = word.lower()
        if len(word) < 3:
            return None
        for index, full in enumerate(self.names):
            if full.startswith(word):
                return index + self.low
        return None


FIELDS = {
    "minute": CronField("minute", 0, 59),
    "hour": CronField("hour", 0, 23),
    "day_of_week": CronField("day_of_week", 0, 6, _DAYS, " (Sunday is 0)"),
    "day_of_month": CronField("day_of_month", 1, 31),
    "month_of_year": CronField("month_of_year", 1, 12, _MONTHS),
}

_PART = re.compile(r"^(?P<base>[^/]*)(?:/(?P<step>[^/]*))?$")
_RANGE = re.compile(r"^(?P<first>[^-]+)-(?P<last>[^-]+)$")


def spec_text(spec: Cronspec | None) -> str:
    """The text a field is shown and stored as: strings as written, numbers comma-joined."""
    if spec is None:
        return "*"
    if isinstance(spec, str):
        return spec.strip()
    if isinstance(spec, int):
        return str(spec)
    return ",".join(str(value) for value in sorted(spec))


def parse_field(field: CronField, spec: Cronspec | None) -> frozenset[int]:
    """The set of values ``spec`` selects in ``field`` (``None`` means ``"*"``, as in Celery)."""
    prefix = f"crontab {field.name}"
    if spec is None:
        spec = "*"
    if isinstance(spec, bool):
        raise ScheduleError(f"{prefix}: {spec!r} is not a number or an expression")
    if isinstance(spec, int):
        values: frozenset[int] = frozenset((spec,))
    elif isinstance(spec, str):
        values = frozenset(_parse_text(field, spec))
    elif isinstance(spec, Iterable):
        items = list(spec)
        if not items:
            raise ScheduleError(f"{prefix}: {spec!r} selects nothing")
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int):
                raise ScheduleError(f"{prefix}: {item!r} in {spec!r} is not a whole number")
        values = frozenset(items)
    else:
        raise ScheduleError(
            f"{prefix}: {spec!r} is not an int, a string expression or a list of ints"
        )
    for value in sorted(values):
        _check_range(field, value)
    return values


def _check_range(field: CronField, value: int) -> None:
    if not field.low <= value <= field.high:
        raise ScheduleError(
            f"crontab {field.name}: {value} is out of range {field.low}-{field.high}{field.note}"
        )


def _parse_text(field: CronField, text: str) -> list[int]:
    prefix = f"crontab {field.name}"
    if not text.strip():
        raise ScheduleError(f"{prefix}: {text!r} is empty")
    values: list[int] = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            raise ScheduleError(f"{prefix}: {text!r} has an empty part")
        values.extend(_parse_part(field, part, text))
    return values


def _parse_part(field: CronField, part: str, text: str) -> list[int]:
    prefix = f"crontab {field.name}"
    match = _PART.match(part)
    if match is None:
        raise ScheduleError(f"{prefix}: {text!r}: {part!r} has more than one '/'")
    base, step_text = match.group("base").strip(), match.group("step")
    if base == "*":
        values = list(range(field.low, field.high + 1))
    else:
        ranged = _RANGE.match(base)
        if ranged is not None:
            first = _value(field, ranged.group("first").strip(), text)
            last = _value(field, ranged.group("last").strip(), text)
            values = _expand(field, first, last)
        elif step_text is not None:
            raise ScheduleError(
                f"{prefix}: {text!r}: a step needs '*' or a range before '/' "
                f"(e.g. '*/15' or '{base}-{field.high}/{step_text.strip()}')"
            )
        else:
            values = [_value(field, base, text)]
    if step_text is None:
        return values
    return values[:: _step(field, step_text.strip(), text)]


def _expand(field: CronField, first: int, last: int) -> list[int]:
    """``first`` to ``last`` inclusive, wrapping past the field's end when ``last < first``."""
    if last >= first:
        return list(range(first, last + 1))
    return list(range(first, field.high + 1)) + list(range(field.low, last + 1))


def _step(field: CronField, text: str, whole: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ScheduleError(
            f"crontab {field.name}: {whole!r}: the step {text!r} must be a whole number, 1 or more"
        )
    return int(text)


def _value(field: CronField, word: str, whole: str) -> int:
    """One value of a part: digits, or a name in a field that has names."""
    if word.isascii() and word.isdigit():
        value = int(word)
        _check_range(field, value)
        return value
    named = field.named(word) if field.names else None
    if named is not None:
        return named
    if word.startswith("-") or not word:
        raise ScheduleError(
            f"crontab {field.name}: {whole!r}: negative or empty values are invalid"
        )
    kinds = "a number or a day name (sun..sat)" if field.name == "day_of_week" else "a number"
    if field.name == "month_of_year":
        kinds = "a number or a month name (jan..dec)"
    raise ScheduleError(f"crontab {field.name}: {whole!r}: {word!r} is not {kinds}")
