"""Message.to_wire / from_wire: kombu's JSON envelope, and a reason for every defect."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from celeriac.errors import DecodeError
from celeriac.protocol.message import Message, new_id, task_message

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
)
headers_strategy = st.dictionaries(st.text(max_size=12), json_values, max_size=6).map(
    lambda extra: {**extra, "task": "tasks.add", "id": new_id()}
)


@given(headers_strategy, st.binary(max_size=512), st.sampled_from(["utf-8", "binary"]))
def test_to_wire_from_wire_round_trip(
    headers: dict[str, Any], body: bytes, content_encoding: str
) -> None:
    message = Message(
        headers=headers,
        body=body,
        content_type="application/x-msgpack",
        content_encoding=content_encoding,
        properties={"correlation_id": headers["id"], "priority": 3},
    )
    assert Message.from_wire(message.to_wire()) == message


def test_task_message_round_trips_and_keeps_its_accessors() -> None:
    message = task_message(
        task="tasks.add",
        task_id="f00",
        body=b"[[2, 3], {}, {}]",
        content_type="application/json",
        content_encoding="utf-8",
        retries=2,
        priority=7,
        reply_to="replies",
    )
    again = Message.from_wire(message.to_wire().decode())
    assert again == message
    assert (again.task, again.id, again.retries, again.priority) == ("tasks.add", "f00", 2, 7)
    assert again.properties["reply_to"] == "replies"


def test_the_envelope_is_kombus() -> None:
    message = task_message(
        task="t", task_id="1", body=b"[]", content_type="application/json", content_encoding="utf-8"
    )
    envelope = orjson.loads(message.to_wire())
    assert set(envelope) == {"body", "content-encoding", "content-type", "headers", "properties"}
    assert base64.b64decode(envelope["body"]) == b"[]"
    assert envelope["properties"]["body_encoding"] == "base64"


def test_a_kombu_envelope_parses() -> None:
    """What a Celery 5 client leaves on Redis for ``add.delay(2, 3)``."""
    body = b'[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
    envelope = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": "tasks.add",
            "id": "2f6ec0d8-3ba3-4a44-8f68-8f1b0cba1c4e",
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": "2f6ec0d8-3ba3-4a44-8f68-8f1b0cba1c4e",
            "parent_id": None,
            "argsrepr": "(2, 3)",
            "kwargsrepr": "{}",
            "origin": "gen1234@host",
            "ignore_result": False,
        },
        "properties": {
            "correlation_id": "2f6ec0d8-3ba3-4a44-8f68-8f1b0cba1c4e",
            "reply_to": "c1b3c1f2-6d8e-3d0c-a3c5-2b2d7a1f3c90",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": "celery"},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": "a8d4d6b2-0d59-4f3a-9c2e-37a1f0b6f111",
        },
    }
    message = Message.from_wire(orjson.dumps(envelope))
    assert message.body == body
    assert message.task == "tasks.add"
    assert message.id == "2f6ec0d8-3ba3-4a44-8f68-8f1b0cba1c4e"
    assert message.content_type == "application/json"
    assert "body_encoding" not in message.properties
    assert message.properties["delivery_info"]["routing_key"] == "celery"
    assert message.eta is None


def test_an_envelope_with_a_plain_text_body_parses() -> None:
    """No content type either: kombu's defaults (JSON in UTF-8) apply."""
    envelope = {
        "body": "[[], {}, null]",
        "headers": {"task": "t", "id": "1"},
        "properties": {"body_encoding": "utf-8"},
    }
    message = Message.from_wire(orjson.dumps(envelope))
    assert message.body == b"[[], {}, null]"
    assert (message.content_type, message.content_encoding) == ("application/json", "utf-8")


def _envelope(**changes: Any) -> bytes:
    envelope: dict[str, Any] = {
        "body": base64.b64encode(b"[]").decode(),
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {"task": "t", "id": "1"},
        "properties": {"body_encoding": "base64"},
    }
    envelope.update(changes)
    return orjson.dumps({k: v for k, v in envelope.items() if v is not ...})


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not valid JSON"),
        (b"\x80\x04garbage", "not valid JSON"),
        (b'{"headers": ', "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"just a string"', "not a JSON object"),
        (_envelope(headers=...), "no headers object"),
        (_envelope(headers=[1]), "no headers object"),
        (_envelope(properties=[1]), "properties are not an object"),
        (_envelope(body=...), "body is missing or not a string"),
        (_envelope(body=12), "body is missing or not a string"),
        (_envelope(body="not*base64!"), "not valid base64"),
        (_envelope(headers={"id": "1"}), "lack 'task' or 'id'"),
        (_envelope(headers={"task": "t"}), "lack 'task' or 'id'"),
    ],
)
def test_garbage_raises_decode_error_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        Message.from_wire(data)
    assert reason in str(info.value)
    assert reason in info.value.reason


def test_decode_errors_are_chained_to_their_cause() -> None:
    with pytest.raises(DecodeError) as info:
        Message.from_wire(_envelope(body="not*base64!"))
    assert info.value.__cause__ is not None


def test_unserializable_headers_raise_decode_error_on_to_wire() -> None:
    message = Message(headers={"task": "t", "id": "1", "bad": object()}, body=b"")
    with pytest.raises(DecodeError, match="not JSON-serializable"):
        message.to_wire()


def test_with_headers_leaves_the_original_alone() -> None:
    message = Message(headers={"task": "t", "id": "1", "retries": 0}, body=b"")
    retried = message.with_headers(retries=1)
    assert (message.retries, retried.retries) == (0, 1)
