"""A task's Request crosses the prefork pool's pipe pickled (``Request.__reduce__``): every
field comes back as it went, whatever its value, and a field added later cannot be forgotten."""

from __future__ import annotations

import dataclasses
import pickle

from celeriac.context import Request


def test_every_field_survives_the_pipe() -> None:
    fields = dataclasses.fields(Request)
    # a value unlike the default for every field, so a field left out of the pickle shows
    request = Request(
        id="id-1", task="shop.add", args=(1, "two"), kwargs={"k": [3]}, retries=2,
        is_eager=True, eta="2026-12-04T10:00:00+00:00", expires="2026-12-05T10:00:00+00:00",
        root_id="root", parent_id="parent", group="g", hostname="w@h",
        delivery_info={"queue": "q", "priority": 3, "redelivered": True}, reply_to="r",
        correlation_id="c", callbacks=[{"task": "cb"}], errbacks=[{"task": "eb"}],
        chain=[{"task": "next"}], chord={"task": "body"}, headers={"origin": "gen1@h"},
        ignore_result=True, delivery_count=3, timelimit=(10.0, 5.0), children=["child"],
        retry_stored=True,
    )  # fmt: skip
    default = Request(id="", task="")
    unchanged = [f.name for f in fields if getattr(request, f.name) == getattr(default, f.name)]
    assert unchanged == [], "give these fields a value of their own in this test"
    back = pickle.loads(pickle.dumps(request, pickle.HIGHEST_PROTOCOL))
    assert back == request
    assert back.origin == "gen1@h" and back.redelivered
