"""``resp.pack_command``: hiredis packs what it can, the Python packer the rest, byte for byte
the same RESP."""

from __future__ import annotations

from typing import Any

import pytest

from celeriac.transports.redis import resp


@pytest.mark.parametrize(
    "args",
    [
        ("PING",),
        ("EVALSHA", "a" * 40, 0, "celeriac:", "ack", "", "celery", "17", b"\x00tok\r\n"),
        ["SET", "k", "é" * 3, -5],
        ("BLPOP", "q:notify", 0.5),
    ],
)
def test_hiredis_and_python_pack_the_same(args: Any) -> None:
    packed = resp.pack_command(args)
    assert packed == resp._pack(args)
    assert packed.startswith(b"*%d\r\n" % len(args))


def test_an_argument_hiredis_refuses_is_packed_as_its_str() -> None:
    import hiredis

    refused: Any = ("SET", "k", bytearray(b"v"))
    with pytest.raises(TypeError):
        hiredis.pack_command(refused)
    assert resp.pack_command(("SET", "k", bytearray(b"v"))).endswith(b"$1\r\nv\r\n")
    assert resp.pack_command(("SET", "k", memoryview(b"vw"))).endswith(b"$2\r\nvw\r\n")
    assert resp.pack_command(("SET", "k", None)) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\nNone\r\n"
    assert resp.pack_command(["SET", "k", True]).endswith(b"$4\r\nTrue\r\n")
