"""``celeriac multi``'s command line, read as ``celery multi`` reads it."""

from __future__ import annotations

import signal
import sys

import pytest

from celeriac.cli.multi_nodes import find_signal, nodes_from, parse_args
from celeriac.utils.nodenames import gethostname

HOST = gethostname()


def nodes(*words: str) -> dict[str, list[str]]:
    return {node.name: node.argv() for node in nodes_from(parse_args(list(words)))}


def test_a_count_names_the_nodes_and_per_node_options_pick_some() -> None:
    found = nodes("3", "-A", "proj", "-l", "INFO", "-c", "3", "-c:1", "10", "-Q:2-3", "b")
    assert list(found) == [f"celeriac1@{HOST}", f"celeriac2@{HOST}", f"celeriac3@{HOST}"]
    first = found[f"celeriac1@{HOST}"]
    assert first[:5] == ["-m", "celeriac", "-A", "proj", "worker"]  # group options first
    assert first[5] == "--detach"
    assert first[first.index("-c") + 1] == "10"
    assert "-Q" not in first
    second = found[f"celeriac2@{HOST}"]
    assert second[second.index("-c") + 1] == "3"
    assert second[second.index("-Q") + 1] == "b"
    assert "--pidfile=celeriac2.pid" in second
    assert "--logfile=celeriac2%I.log" in second  # %I is the worker's to expand
    assert second[second.index("-n") + 1] == f"celeriac2@{HOST}"


def test_names_hosts_and_file_name_abbreviations() -> None:
    found = nodes(
        "image", "video@example.com", "--pidfile=/run/%n.pid", "--logfile=/log/%h%I.log",
        "-c:image", "5", "--range-prefix=w",
    )  # fmt: skip
    image = found[f"image@{HOST}"]
    assert "--pidfile=/run/image.pid" in image
    assert f"--logfile=/log/image@{HOST}%I.log" in image  # multi's %h: the whole node name
    assert image[image.index("-c") + 1] == "5"
    video = found["video@example.com"]
    assert "--pidfile=/run/video.pid" in video and "-c" not in video
    assert list(nodes("2", "--range-prefix=w", "--hostname=box")) == ["w1@box", "w2@box"]
    assert list(nodes("a", "b", "--prefix=x-", "--suffix=h")) == ["x-a@h", "x-b@h"]


def test_node_files_and_executable() -> None:
    [node] = nodes_from(parse_args(["w1", "-p", "run/%n.pid", "-f", "/log/%n%I.log"]))
    assert node.pidfile.endswith("/run/w1.pid")
    assert node.logfile == "/log/w1.log"  # as the worker's main process names it
    assert node.executable == sys.executable
    argv = node.argv()
    assert "--pidfile=run/w1.pid" in argv and "-p" not in argv  # the worker's option name
    assert argv[argv.index("-f") + 1] == "/log/w1%I.log"
    [custom] = nodes_from(parse_args(["w1", "--executable=/opt/py/bin/python"]))
    assert custom.executable == "/opt/py/bin/python"


def test_stop_signals() -> None:
    assert find_signal(parse_args(["w1"])) == signal.SIGTERM
    assert find_signal(parse_args(["w1", "-KILL"])) == signal.SIGKILL
    assert find_signal(parse_args(["w1", "-9"])) == 9
    parsed = parse_args(["-INT", "w1", "w2"])  # a signal does not take the next word
    assert find_signal(parsed) == signal.SIGINT
    assert [n.shortname for n in nodes_from(parsed)] == ["w1", "w2"]
    assert all("-INT" not in n.argv() for n in nodes_from(parsed))


def test_mistakes_are_value_errors_naming_them() -> None:
    with pytest.raises(ValueError, match="there is no node 4"):
        nodes_from(parse_args(["3", "-c:4", "2"]))
    [node] = nodes_from(parse_args(["w1", "--pidfile=%q.pid"]))
    with pytest.raises(ValueError, match="unknown abbreviation %q"):
        node.argv()
