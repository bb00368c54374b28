"""The chaos suite's fault proxy itself: bytes relayed, frozen without a close, cut,
swallowed, and relayed again on new connections once healed."""

from __future__ import annotations

import contextlib
import socket

import _paths  # noqa: F401  (sys.path for the chaos modules)
import pytest
from fault_proxy import FaultProxy

pytestmark = [pytest.mark.chaos]


def test_fault_proxy_modes() -> None:
    upstream = socket.create_server(("127.0.0.1", 0))
    with upstream, FaultProxy(upstream.getsockname()[1]) as proxy:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        server, _ = upstream.accept()
        server.settimeout(5)
        client.sendall(b"ping")
        assert server.recv(4) == b"ping"
        assert proxy.half_open() == 1
        client.sendall(b"lost")
        server.settimeout(0.3)
        with pytest.raises(TimeoutError):
            server.recv(4)  # not forwarded, and not closed either
        assert proxy.cut() == 1
        with contextlib.suppress(ConnectionResetError):  # reset or closed: learnt at once
            assert client.recv(4) == b""
        client.close()
        server.close()
        proxy.blackhole()
        swallowed = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        server, _ = upstream.accept()
        swallowed.sendall(b"gone")
        server.settimeout(0.3)
        with pytest.raises(TimeoutError):
            server.recv(4)
        proxy.heal()
        fresh = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        server2, _ = upstream.accept()
        fresh.sendall(b"back")
        server2.settimeout(5)
        assert server2.recv(4) == b"back"
        for sock in (swallowed, server, fresh, server2):
            sock.close()
        assert proxy.stats().accepted == 3
