"""Node names and the %-abbreviations of names and file names, as Celery expands them."""

from __future__ import annotations

import pytest

from celeriac.utils.nodenames import (
    default_nodename,
    gethostname,
    host_format,
    node_format,
    nodesplit,
)


def test_default_nodename_follows_celerys_rule() -> None:
    host = gethostname()
    assert default_nodename(None) == f"celeriac@{host}"
    assert default_nodename("w1@example.com") == "w1@example.com"
    assert default_nodename("example.com") == "celeriac@example.com"  # no '@': the host part
    assert default_nodename("w1@") == f"w1@{host}"
    assert nodesplit("w1@a@b") == ("w1", "a@b")
    assert nodesplit("host") == (None, "host")


def test_host_format_expands_the_hostname_abbreviations() -> None:
    host = "box.example.com"
    assert host_format("w1@%h", host) == "w1@box.example.com"
    assert host_format("%n@%d", host) == "box@example.com"
    assert host_format("%%h is %h", host) == "%h is box.example.com"
    assert host_format("w%i%I", host) == "w0"  # the worker itself: index 0, %I empty
    assert host_format("w%i%I", host, index=3) == "w3-3"
    assert host_format("w1@%h") == f"w1@{gethostname()}"
    assert host_format("100%") == "100%"  # a lone % is kept, as in Celery


def test_node_format_names_the_node_in_file_names() -> None:
    node = "w1@box.example.com"
    assert node_format("/var/run/%n.pid", node) == "/var/run/w1.pid"
    assert node_format("/var/log/%n%I.log", node) == "/var/log/w1.log"
    assert node_format("/var/log/%n%I.log", node, index=2) == "/var/log/w1-2.log"
    assert node_format("%h-%d-%p-%i", node) == "box.example.com-example.com-w1@box.example.com-0"
    assert node_format("plain.log", node) == "plain.log"


def test_an_unknown_abbreviation_names_itself() -> None:
    with pytest.raises(ValueError, match=r"unknown abbreviation %q in '/x/%q.pid'"):
        node_format("/x/%q.pid", "w1@host")
    with pytest.raises(ValueError, match="%z"):
        host_format("w1@%z", "host")
