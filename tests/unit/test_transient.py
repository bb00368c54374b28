"""The pieces of transient fan-out that need no broker: the bounded inbox, who accepts what,
kombu's envelope both ways, and the Redis channel names and subscription globs."""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import threading

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from celeriac.errors import DecodeError, ImproperlyConfigured
from celeriac.protocol.message import Message
from celeriac.routing import Exchange
from celeriac.routing.matching import topic_matches
from celeriac.transports.redis.fanout import Channels, fanout_prefix
from celeriac.transports.transient import Inbox, accepts, check_listen, envelope, from_envelope

# -- the inbox ------------------------------------------------------------------------------------


def test_the_inbox_keeps_the_newest_and_counts_the_dropped() -> None:
    inbox: Inbox[int] = Inbox(3)
    inbox.put_many([1, 2])
    inbox.put(3)
    inbox.put_many([4, 5])
    assert inbox.dropped == 2
    inbox.put_many(range(6, 16))  # a burst larger than the inbox
    assert inbox.dropped == 12
    assert [inbox.take(), inbox.take(), inbox.take(), inbox.take()] == [13, 14, 15, None]


def test_a_put_from_another_thread_wakes_a_waiting_get() -> None:
    async def main() -> int | None:
        inbox: Inbox[int] = Inbox(10)
        waiting = asyncio.ensure_future(inbox.get(timeout=10))
        await asyncio.sleep(0)  # the get is waiting now
        thread = threading.Thread(target=inbox.put, args=(7,))
        thread.start()
        found = await waiting
        thread.join()
        return found

    assert asyncio.run(main()) == 7


def test_closing_the_inbox_ends_every_wait_and_forgets_what_is_buffered() -> None:
    async def main() -> tuple[list[int | None], int | None]:
        inbox: Inbox[int] = Inbox(10)
        waits = [asyncio.ensure_future(inbox.get(timeout=None)) for _ in range(2)]
        await asyncio.sleep(0)  # both wait now
        inbox.put(1)  # taken by one of them
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        inbox.put(2)
        inbox.close()  # forgets 2, ends the other wait
        inbox.put(3)  # ignored once closed
        results = await asyncio.gather(*waits)
        return sorted(results, key=str), await inbox.get(timeout=None)

    assert asyncio.run(main()) == ([1, None], None)


def test_get_times_out_with_none() -> None:
    inbox: Inbox[int] = Inbox(1)
    assert asyncio.run(inbox.get(timeout=0.01)) is None


# -- who accepts what -----------------------------------------------------------------------------


def test_accepts_by_exchange_type() -> None:
    assert accepts("fanout", (), "anything")
    assert accepts("topic", ("task.*", "worker.#"), "worker")
    assert not accepts("topic", ("task.*",), "task.a.b")
    assert accepts("direct", ("a", "b"), "b") and not accepts("direct", ("a",), "ab")
    assert accepts("headers", (), "x")


def test_listen_arguments_are_checked() -> None:
    topic = Exchange("ev", "topic")
    with pytest.raises(ValueError, match="needs a pattern"):
        check_listen(topic, (), 10)
    with pytest.raises(ValueError, match="not the string"):
        check_listen(topic, "task.*", 10)
    with pytest.raises(ValueError, match="positive"):
        check_listen(topic, ("#",), 0)
    assert check_listen(Exchange("box", "fanout"), [], 1) == ()


# -- the envelope ---------------------------------------------------------------------------------


def test_an_envelope_is_kombus_with_delivery_info_and_a_tag() -> None:
    message = Message(headers={"hostname": "w1"}, body=b'{"type": "worker-online"}')
    data = orjson.loads(envelope(message, "celeryev", "worker.online"))
    assert base64.b64decode(data["body"]) == message.body
    props = data["properties"]
    assert props["delivery_info"] == {"exchange": "celeryev", "routing_key": "worker.online"}
    assert props["body_encoding"] == "base64" and len(props["delivery_tag"]) == 36
    back = from_envelope(envelope(message, "celeryev", "worker.online"))
    assert back.body == message.body and back.headers == message.headers
    assert back.properties == {"delivery_info": props["delivery_info"]}


def test_a_celery_envelope_is_read_though_it_is_no_task_message() -> None:
    # the shape kombu's Redis transport PUBLISHes for a Celery event (celery 5.6, captured)
    celery = {
        "body": base64.b64encode(b'[{"type": "task-started", "uuid": "u1"}]').decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"hostname": "w1@vm"},
        "properties": {
            "delivery_mode": 1,
            "delivery_info": {"exchange": "celeryev", "routing_key": "task.multi"},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": "4b1c2e6e-5f7e-4f0e-9a33-1b2c3d4e5f60",
        },
    }
    message = from_envelope(orjson.dumps(celery))
    assert orjson.loads(message.body) == [{"type": "task-started", "uuid": "u1"}]
    assert message.headers == {"hostname": "w1@vm"}
    assert "delivery_tag" not in message.properties
    assert message.properties["delivery_info"]["routing_key"] == "task.multi"
    plain = {**celery, "body": '{"a": 1}', "properties": {"body_encoding": "utf-8"}}
    assert from_envelope(orjson.dumps(plain)).body == b'{"a": 1}'


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"not json", "not valid JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"headers": [], "body": ""}', "not objects"),
        (b'{"body": 5}', "not a string"),
        (b'{"body": "***", "properties": {"body_encoding": "base64"}}', "base64"),
    ],
)
def test_what_is_no_envelope_is_refused_naming_why(data: bytes, why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        from_envelope(data)


def test_headers_that_are_not_json_fail_before_anything_is_sent() -> None:
    with pytest.raises(DecodeError, match="JSON"):
        envelope(Message(headers={"x": object()}, body=b""), "ev", "k")


# -- Redis channels -------------------------------------------------------------------------------


def test_channel_names_are_kombus() -> None:
    channels = Channels(fanout_prefix(True, 0))
    assert channels.publish("celery.pidbox", "") == "/0.celery.pidbox"
    assert channels.publish("celeryev", "worker.heartbeat") == "/0.celeryev/worker.heartbeat"
    assert channels.routing_key("celeryev", "/0.celeryev/task.multi") == "task.multi"
    assert channels.routing_key("celeryev", "/0.celeryev") == ""
    assert channels.routing_key("celeryev", "/0.celeryevX/task") is None
    assert fanout_prefix(False, 3) == fanout_prefix("false", 3) == ""
    assert fanout_prefix("/{db}.x.", 3) == "/3.x."
    with pytest.raises(ImproperlyConfigured, match="fanout_prefix"):
        fanout_prefix("/{database}.", 3)


@pytest.mark.parametrize(
    ("kind", "patterns", "globs"),
    [
        ("fanout", (), ["/0.box", "/0.box/*"]),
        ("topic", ("#",), ["/0.ev", "/0.ev/*"]),
        ("topic", ("task.*", "task.#"), ["/0.ev/task*"]),
        ("topic", ("#", "task.*", "worker.heartbeat"), ["/0.ev", "/0.ev/*"]),
        (
            "topic",
            ("worker.#", "worker.heartbeat", "task.multi"),
            ["/0.ev/task.multi", "/0.ev/worker*"],
        ),
        ("topic", ("*.heartbeat",), ["/0.ev/*"]),
    ],
)
def test_globs_are_the_fewest_that_cover_the_patterns(
    kind: str, patterns: tuple[str, ...], globs: list[str]
) -> None:
    name = "box" if kind == "fanout" else "ev"
    assert Channels("/0.").globs(Exchange(name, kind), patterns) == globs  # type: ignore[arg-type]


def test_glob_characters_in_names_are_escaped() -> None:
    globs = Channels("/0.").globs(Exchange("a*b?[c]", "topic"), ("x\\y.#",))
    assert globs == ["/0.a\\*b\\?\\[c\\]/x\\\\y*"]


_WORD = st.sampled_from(["task", "worker", "a", "b", "ab"])
_PATTERN_WORD = st.sampled_from(["task", "worker", "a", "b", "*", "#"])


@given(
    patterns=st.lists(
        st.lists(_PATTERN_WORD, min_size=0, max_size=3).map(".".join), min_size=1, max_size=4
    ),
    key=st.lists(_WORD, min_size=0, max_size=4).map(".".join),
)
def test_globs_cover_every_key_a_pattern_takes_and_never_twice(
    patterns: list[str], key: str
) -> None:
    channels = Channels("/0.")
    globs = channels.globs(Exchange("ev", "topic"), patterns)
    channel = channels.publish("ev", key)
    # these names hold no glob characters, so fnmatch reads the globs as Redis does
    hits = [g for g in globs if fnmatch.fnmatchcase(channel, g)]
    assert len(hits) <= 1, (globs, channel)  # Redis would deliver it once per matching glob
    if any(topic_matches(p, key) for p in patterns):
        assert hits, (globs, channel)
