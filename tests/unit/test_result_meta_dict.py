"""``ResultMeta.to_dict``: what a serializer gets. Dataclasses anywhere in the record become
dicts, as :func:`dataclasses.asdict` makes them (a task may return one); nothing else is copied
(``asdict`` deep-copied every value: a tenth of a prefork child's CPU per stored result, and a
whole copy of a large one)."""

from __future__ import annotations

from collections import namedtuple
from dataclasses import asdict, dataclass
from typing import Any

import pytest

from celeriac.results.base import ResultMeta


@dataclass
class Point:
    x: int
    tags: list[Any]


Pair = namedtuple("Pair", "left right")

VALUES = [
    None,
    7,
    "text",
    b"bytes",
    [1, 2, {"a": [3]}],
    {"point": Point(1, [2])},
    [Point(1, [Point(2, [])])],
    (1, Point(3, [])),
    Pair(1, Point(1, [])),
    {"pair": (1, 2)},
    Point(0, [{"deep": Point(5, [])}]),
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_the_dict_is_what_asdict_made(value: Any) -> None:
    meta = ResultMeta("t", "SUCCESS", value, args=[value], kwargs={"v": value}, children=[])
    expected = asdict(meta)
    del expected["reply_to"]
    got = meta.to_dict()
    assert got == expected
    assert type(got["result"]) is type(expected["result"])


def test_values_without_dataclasses_are_not_copied() -> None:
    big = list(range(100_000))
    opaque = object()
    data = ResultMeta("t", "SUCCESS", big, kwargs={"o": opaque}).to_dict()
    assert data["result"] is big
    assert data["kwargs"]["o"] is opaque


def test_reply_to_is_left_out_unless_set() -> None:
    assert "reply_to" not in ResultMeta("t").to_dict()
    assert ResultMeta("t", reply_to="q").to_dict()["reply_to"] == "q"
