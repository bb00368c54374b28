"""The kombu layout's names and formats, checked against kombu 5.7's own code (a test
dependency): priority lists, binding members and topic patterns, the envelope a publisher
sends and a restore writes, and the transport options it reads."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from celeriac.errors import ImproperlyConfigured
from celeriac.protocol.message import Message, task_message
from celeriac.transports.redis.kombu_layout import (
    COUNT_PROPERTY,
    KombuNames,
    KombuOptions,
    Tags,
    delivery_info,
    due_field,
    due_list,
    layout_of,
    list_queue,
    member,
    previous_deliveries,
    publish_envelope,
    restored_envelope,
    split_member,
    topic_pattern,
)

kombu_redis = pytest.importorskip("kombu.transport.redis", reason="kombu 5.7 is a test dependency")
kombu_exchange: Any = pytest.importorskip("kombu.transport.virtual.exchange")


class _Channel(kombu_redis.Channel):  # type: ignore[misc,name-defined]
    """kombu's Redis channel with nothing connected: only its naming methods are called."""

    def __init__(self) -> None:  # no connection, no pool
        pass


def names(**options: Any) -> KombuNames:
    return KombuNames.of("pfx:", "celeriac:", KombuOptions.of(options))


def test_priority_lists_are_kombus() -> None:
    channel = _Channel()
    ours = names()
    for priority in range(10):
        assert "q" + ours.suffix(priority) == channel._q_for_pri("q", priority)
    # kombu's BRPOP order: step 0 first
    assert ours.lists("q") == ["pfx:" + channel._q_for_pri("q", p) for p in (0, 3, 6, 9)]
    assert names(priority_steps=[0, 5]).lists("q") == ["pfx:q", "pfx:q\x06\x165"]
    assert ours.suffix(12) == ours.suffix(9) and ours.suffix(-3) == ""


def test_binding_members_and_topic_patterns_are_kombus() -> None:
    exchange = kombu_exchange.TopicExchange(None)
    for key in ["a.b", "a.*.c", "#", "orders.#", "x-y.z(1)", "a b.c+d", "*.é.#"]:
        assert topic_pattern(key) == exchange.key_to_pattern(key)
    assert member("celery", "", "celery") == "celery\x06\x16\x06\x16celery"
    assert split_member(b"k\x06\x16^k$\x06\x16q") == ("k", "^k$", "q")
    assert split_member("no separators") is None
    assert names().table("celery") == "pfx:_kombu.binding.celery"
    assert names().permanent("celery") == "pfx:_kombu.binding_permanent.celery"


def test_a_published_envelope_reads_as_kombus_message() -> None:
    """What ``publish_envelope`` adds is what kombu's publisher adds; kombu reads it back."""
    sent = task_message(
        task="t.add",
        task_id="id-1",
        body=b"[[2, 3], {}, {}]",
        content_type="application/json",
        content_encoding="utf-8",
        priority=5,
    )
    tag = Tags().next()
    wire = publish_envelope(sent.to_wire(), delivery_info("", "celery"), tag)
    raw = json.loads(wire)
    message = kombu_redis.Channel.Message(raw, channel=_Channel())
    assert message.delivery_tag == tag and len(tag) == 36
    assert message.delivery_info["routing_key"] == "celery"
    assert message.headers["task"] == "t.add" and message.properties["priority"] == 5
    assert message.body == b"[[2, 3], {}, {}]"  # base64 decoded by kombu
    # the same message, celeriac's view
    assert Message.from_wire(wire).headers == sent.headers


def test_an_envelope_sent_again_gets_a_fresh_tag_and_no_marks() -> None:
    envelope = {
        "body": "W10=",
        "headers": {"task": "t", "id": "x", "redelivered": True},
        "properties": {
            "delivery_tag": "old",
            "delivery_info": {"exchange": "e", "routing_key": "k", "redelivered": True},
            COUNT_PROPERTY: 3,
            "body_encoding": "base64",
        },
    }
    again = orjson.loads(publish_envelope(orjson.dumps(envelope), delivery_info("", "q"), "new"))
    assert again["properties"]["delivery_tag"] == "new"
    assert again["properties"]["delivery_info"] == {"exchange": "", "routing_key": "q"}
    assert COUNT_PROPERTY not in again["properties"]
    assert "redelivered" not in again["headers"]


def test_a_restore_marks_and_counts_as_kombu_marks() -> None:
    original = {
        "body": "W10=",
        "headers": {"task": "t"},
        "properties": {"delivery_info": {"exchange": "", "routing_key": "q"}, "priority": 0},
    }
    kombus = json.loads(json.dumps(original))
    kombus["headers"]["redelivered"] = True  # kombu's _do_restore_message
    kombus["properties"]["delivery_info"]["redelivered"] = True
    restored = json.loads(restored_envelope(json.loads(json.dumps(original))))
    assert restored["properties"].pop(COUNT_PROPERTY) == 1
    assert restored == kombus
    # kombu's JSON: json.dumps with the default separators
    assert restored_envelope({"a": [1, 2]}) == b'{"a": [1, 2]}'
    assert previous_deliveries(kombus) == 1  # a Celery worker's restore: marked, not counted
    twice = json.loads(restored_envelope(json.loads(restored_envelope(original))))
    assert previous_deliveries(twice) == 2
    assert previous_deliveries({}) == 0


def test_delayed_fields_name_their_list() -> None:
    tag = Tags().next()
    field = due_field("q:with:colons\x06\x163", tag)
    assert due_list(field) == "q:with:colons\x06\x163"
    assert list_queue("q:with:colons\x06\x163", (0, 3, 6, 9)) == "q:with:colons"
    assert due_list(tag) is None


def test_tags_are_unique_and_kombu_shaped() -> None:
    tags = Tags()
    head, first = tags.reserve(3)
    assert len(head) == 24 and head.count("-") == 4
    made = {tags.next() for _ in range(1000)}
    assert len(made) == 1000 and all(len(t) == 36 for t in made)
    assert not any(t.endswith(f"{first:012x}") for t in made)  # reserved numbers are skipped


def test_options_are_checked_naming_them() -> None:
    assert layout_of({}) == "celeriac" and layout_of({"layout": "kombu"}) == "kombu"
    with pytest.raises(ImproperlyConfigured, match="'layout'"):
        layout_of({"layout": "kombo"})
    assert KombuOptions.of({}).visibility_timeout == 3600
    assert KombuOptions.of({"lease_seconds": 5}).visibility_timeout == 5
    assert KombuOptions.of({"visibility_timeout": 7, "lease_seconds": 5}).visibility_timeout == 7
    for bad in ({"visibility_timeout": 0}, {"visibility_timeout": "soon"}):
        with pytest.raises(ImproperlyConfigured, match="visibility_timeout"):
            KombuOptions.of(bad)
    for steps in ([3, 6], [0, 6, 3], [0, 10], "0369", 3):
        with pytest.raises(ImproperlyConfigured, match="priority_steps"):
            KombuOptions.of({"priority_steps": steps})
    with pytest.raises(ImproperlyConfigured, match="'sep'"):
        KombuOptions.of({"sep": ":"})
    assert names(unacked_key="u", unacked_index_key="ui").unacked == "pfx:u"


def test_a_fresh_envelope_is_extended_in_place() -> None:
    """``to_wire`` output gets kombu's fields before its closing braces, byte for byte."""
    sent = task_message(
        task="t",
        task_id="i",
        body=b"[]",
        content_type="application/json",
        content_encoding="utf-8",
    )
    wire = sent.to_wire()
    out = publish_envelope(wire, delivery_info("", "q"), "T")
    assert (
        out
        == wire[:-2] + b',"delivery_info":{"exchange":"","routing_key":"q"},"delivery_tag":"T"}}'
    )
