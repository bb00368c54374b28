"""The RabbitMQ beat store against the real broker: leadership by a single-active-consumer queue,
state in last-value queues, changes through the leader.

Each test uses a queue prefix of its own in the ``celeriac-test`` vhost and deletes its queues
afterwards. Failovers are timed from the moment the leader goes (resign, a connection RabbitMQ
closes, ``kill -9``, ``SIGSTOP``) to the moment the standby store in the test holds the token;
the standby waits for RabbitMQ's delivery of the token (``wait_lead``), not on a clock.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

import amqp_broker
from celeriac.beat.amqp_queues import BeatQueues
from celeriac.beat.amqp_state import Command
from celeriac.beat.amqp_store import AmqpBeatStore
from celeriac.errors import ImproperlyConfigured, TransportError
from conftest import require_service

pytestmark = pytest.mark.amqp

ENTRY = {"task": "tasks.report", "schedule": {"every": 30.0}, "args": [1], "kwargs": {}}

#: A beat in another process: leads when it can, says so on stdout, re-checks every ttl/4 s
#: while it leads (a scheduler's tick) and waits for the token while it does not.
CHILD = r"""
import asyncio, sys
from celeriac.beat.amqp_store import AmqpBeatStore

async def main(url: str, prefix: str, ttl: float) -> None:
    store = AmqpBeatStore(url, prefix=prefix, lease=ttl)
    await store.open()
    leading = None
    while True:
        now = await store.wait_lead("child", ttl, ttl / 4)
        if now != leading:
            print("leading" if now else "following", flush=True)
            leading = now
        if now:
            await asyncio.sleep(ttl / 4)

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
"""


class Beats:
    """One test's queue prefix, its stores and child processes, all cleaned up afterwards."""

    def __init__(self) -> None:
        self.prefix = f"it-beat-{uuid.uuid4().hex[:8]}"
        self.children: list[subprocess.Popen[bytes]] = []

    def store(self, **options: Any) -> AmqpBeatStore:
        return AmqpBeatStore(amqp_broker.URL, options, prefix=self.prefix)

    def child(self, ttl: float) -> Child:
        process = subprocess.Popen(
            [sys.executable, "-c", CHILD, amqp_broker.URL, self.prefix, str(ttl)],
            stdout=subprocess.PIPE,
        )
        self.children.append(process)
        return Child(process)

    def cleanup(self) -> None:
        for process in self.children:
            if process.poll() is None:
                process.kill()
            process.wait(10)
            if process.stdout is not None:
                process.stdout.close()
        amqp_broker.delete(BeatQueues(self.prefix).arguments())


class Child:
    """A child beat's stdout, read line by line with a deadline (select, no polling)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.buffer = b""

    def expect(self, line: str, timeout: float = 15.0) -> None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buffer:
                got, self.buffer = self.buffer.split(b"\n", 1)
                if got.decode() == line:
                    return
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the child beat did not say {line!r} within {timeout} s"
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 4096)
                assert chunk, f"the child beat exited ({self.process.poll()}) before {line!r}"
                self.buffer += chunk

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)


@pytest.fixture(scope="module")
def vhost() -> None:
    require_service("RabbitMQ", 5672)
    amqp_broker.ensure_vhost()


@pytest.fixture
def beats(vhost: None) -> Iterator[Beats]:
    made = Beats()
    yield made
    made.cleanup()


def run(coro: Callable[[], Coroutine[Any, Any, None]], timeout: float = 30) -> None:
    asyncio.run(asyncio.wait_for(coro(), timeout=timeout))


def close_connection_named(name: str) -> None:
    """Have RabbitMQ close the connection whose client named it ``name``."""
    out = amqp_broker.rabbitmqctl(
        "list_connections", "-q", "--no-table-headers", "pid", "client_properties"
    )
    pids = [line.split("\t")[0] for line in out.splitlines() if f'"{name}"' in line]
    assert len(pids) == 1, f"expected one connection named {name}: {out[:500]}"
    amqp_broker.rabbitmqctl("close_connection", pids[0], "test: the leader's connection is gone")


def test_two_stores_contend_one_leads_and_resign_hands_over_at_once(beats: Beats) -> None:
    async def main() -> None:
        a, b = beats.store(), beats.store()
        await a.open()
        await b.open()
        assert await a.lead("a", 10) is True
        assert await b.lead("b", 10) is False
        assert await a.lead("a", 10) is True  # renewing keeps it
        assert await b.lead("b", 10) is False
        started = time.monotonic()
        await a.resign("a")
        assert await b.wait_lead("b", 10, timeout=5) is True
        handover = time.monotonic() - started
        assert await a.lead("a", 10) is False
        assert await b.lead("b", 10) is True
        print(f"resign -> new leader: {handover * 1000:.1f} ms")
        assert handover < 1.0
        await a.close()
        await b.close()

    run(main)
    # the leader's token and at most a spare or two, never one per call
    assert int(amqp_broker.queue_table()[f"{beats.prefix}.leader"]["messages"]) <= 3


def test_six_stores_in_six_threads_asking_at_once_exactly_one_leads(beats: Beats) -> None:
    """No store waits to decide: each answers from round trips, and exactly one says True."""
    gun = threading.Barrier(6)
    results: dict[str, bool] = {}
    errors: list[BaseException] = []

    def beat(node: str) -> None:
        async def main() -> None:
            store = beats.store()
            await store.open()
            try:
                gun.wait(10)
                results[node] = await store.lead(node, 60)
                gun.wait(10)  # nobody closes (and so resigns) before all have answered
            finally:
                await store.close()

        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=beat, args=(f"n{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert len(results) == 6
    assert sum(results.values()) == 1


def test_a_lease_not_renewed_within_its_ttl_is_given_up(beats: Beats) -> None:
    ttl = 0.5

    async def main() -> None:
        a, b = beats.store(), beats.store()
        await a.open()
        await b.open()
        asked = time.monotonic()
        assert await a.lead("a", ttl) is True
        assert await b.lead("b", ttl) is False
        # a's connection lives, but it does not ask again: its lease ends with the ttl
        assert await b.wait_lead("b", ttl, timeout=5) is True
        elapsed = time.monotonic() - asked
        print(f"unrenewed lease of {ttl} s given up after {elapsed:.2f} s")
        assert ttl - 0.05 <= elapsed < ttl + 1.0
        assert await a.lead("a", ttl) is False
        await a.close()
        await b.close()

    run(main)


def test_a_standby_that_stopped_asking_is_not_handed_the_token(beats: Beats) -> None:
    """``quiet`` asked once and then never again; its connection lives. RabbitMQ would hand it
    the token next (it subscribed first), and it would sit on it: it leaves the queue instead
    once its ttl passes without a ``lead()``, so the token goes to the beat still asking."""
    ttl = 0.6

    async def main() -> None:
        leader, quiet, asking = beats.store(), beats.store(), beats.store()
        for store in (leader, quiet, asking):
            await store.open()
        assert await leader.lead("leader", ttl) is True
        assert await quiet.lead("quiet", ttl) is False
        assert await asking.lead("asking", ttl) is False
        end = time.monotonic() + 2 * ttl
        while time.monotonic() < end:  # two beats renewing at a third of the lease
            assert await leader.lead("leader", ttl) is True
            assert await asking.lead("asking", ttl) is False
            await asyncio.sleep(ttl / 3)
        await leader.resign("leader")
        assert await asking.wait_lead("asking", ttl, timeout=5) is True
        for store in (leader, quiet, asking):
            await store.close()

    run(main)


def test_the_broker_closing_the_leaders_connection_hands_over(beats: Beats) -> None:
    name = f"{beats.prefix}-a"

    async def main() -> None:
        a, b = beats.store(connection_name=name), beats.store()
        await a.open()
        await b.open()
        assert await a.lead("a", 10) is True
        assert await b.lead("b", 10) is False
        await asyncio.to_thread(close_connection_named, name)
        closed = time.monotonic()  # rabbitmqctl has returned: the connection is closed
        assert await b.wait_lead("b", 10, timeout=10) is True
        print(f"connection closed -> new leader: {(time.monotonic() - closed) * 1000:.1f} ms")
        assert await a.lead("a", 10) is False  # its round trip fails; it rejoins as a standby
        assert await a.lead("a", 10) is False
        assert await b.lead("b", 10) is True
        await a.close()
        await b.close()

    run(main)


def test_a_leader_killed_with_sigkill_hands_over_within_a_second(beats: Beats) -> None:
    child = beats.child(ttl=10)
    child.expect("leading")

    async def main() -> None:
        standby = beats.store()
        await standby.open()
        assert await standby.lead("standby", 10) is False
        started = time.monotonic()
        child.signal(signal.SIGKILL)
        assert await standby.wait_lead("standby", 10, timeout=10) is True
        elapsed = time.monotonic() - started
        print(f"kill -9 -> new leader: {elapsed * 1000:.1f} ms")
        assert elapsed < 1.0
        await standby.close()

    run(main)


def test_a_frozen_leader_loses_the_token_within_its_lease_and_knows_it_on_waking(
    beats: Beats,
) -> None:
    ttl = 4.0  # heartbeat 1 s: RabbitMQ closes a silent connection after about 3 s
    child = beats.child(ttl=ttl)
    child.expect("leading")

    async def main() -> None:
        standby = beats.store()
        await standby.open()
        assert await standby.lead("standby", ttl) is False
        started = time.monotonic()
        child.signal(signal.SIGSTOP)
        try:
            assert await standby.wait_lead("standby", ttl, timeout=3 * ttl) is True
            elapsed = time.monotonic() - started
        finally:
            child.signal(signal.SIGCONT)
        print(f"SIGSTOP -> new leader: {elapsed:.2f} s (ttl {ttl} s)")
        assert elapsed < ttl
        # the woken leader's next round trip fails: it stands by, it does not lead as well
        await asyncio.to_thread(child.expect, "following")
        assert await standby.lead("standby", ttl) is True
        await standby.close()

    run(main)


def test_entries_put_by_a_non_leader_reach_the_leader_and_the_writer_sees_them_at_once(
    beats: Beats,
) -> None:
    async def main() -> None:
        leader, other = beats.store(), beats.store()
        await leader.open()
        await other.open()
        assert await leader.lead("leader", 10) is True
        before = await leader.version()
        await other.put_entries({"report": ENTRY, "cleanup": {**ENTRY, "args": [2]}})
        assert set(await other.entries()) == {"report", "cleanup"}  # its own, at once
        assert await leader.version() != before
        assert await leader.entries() == {"report": ENTRY, "cleanup": {**ENTRY, "args": [2]}}
        await leader.record_runs({"report": 1000.0, "cleanup": 1000.0})
        await other.delete_entries(["cleanup"])
        assert set(await leader.entries()) == {"report"}
        assert await leader.runs() == {"report": 1000.0}
        # once applied, the writer's view comes from the snapshot, the same as anyone's
        third = beats.store()
        await third.open()
        assert await third.entries() == await other.entries() == {"report": ENTRY}
        assert await third.version() == await leader.version()
        # what a caller does to what it read changes nothing stored
        (await leader.entries())["report"]["args"].append(99)
        assert (await leader.entries())["report"]["args"] == [1]
        for store in (leader, other, third):
            await store.close()

    run(main)


def test_changes_wait_for_a_leader_visible_to_all_and_apply_when_one_leads(
    beats: Beats,
) -> None:
    async def main() -> None:
        writer, reader = beats.store(), beats.store()
        await writer.open()
        await reader.open()
        await writer.put_entries({"nightly": ENTRY})
        await writer.record_runs({"nightly": 1000.0})
        # nobody leads: the commands wait in their queue, and every reader sees them there
        assert await writer.entries() == await reader.entries() == {"nightly": ENTRY}
        assert await reader.runs() == {"nightly": 1000.0}
        version = await reader.version()
        assert amqp_broker.queue_table()[f"{beats.prefix}.commands"]["messages"] == "2"
        assert await reader.lead("reader", 10) is True  # applies them, then acks them
        assert amqp_broker.queue_table()[f"{beats.prefix}.commands"]["messages"] == "0"
        assert await reader.entries() == await writer.entries() == {"nightly": ENTRY}
        assert await reader.runs() == {"nightly": 1000.0}
        assert await reader.version() == await writer.version() == version
        await writer.close()
        await reader.close()

    run(main)


def test_runs_and_entries_survive_a_restart_of_the_store(beats: Beats) -> None:
    async def main() -> None:
        first = beats.store()
        await first.open()
        assert await first.lead("one", 10) is True
        await first.put_entries({"hourly": ENTRY})
        await first.record_runs({"hourly": 1_700_000_000.0})
        version = await first.version()
        await first.close()

        again = beats.store()
        await again.open()
        assert await again.runs() == {"hourly": 1_700_000_000.0}  # read as a non-leader
        assert await again.lead("two", 10) is True
        assert await again.entries() == {"hourly": ENTRY}
        assert await again.version() == version
        await again.record_runs({"hourly": 1_600_000_000.0})  # an earlier slot: kept back
        await again.record_runs({"hourly": 1_700_003_600.0})
        await again.close()

        third = beats.store()
        await third.open()
        assert await third.runs() == {"hourly": 1_700_003_600.0}
        await third.close()

    run(main)


async def publish_raw(prefix: str, *commands: Command) -> None:
    """Commands as a sender would publish them, in this order (bypassing a store)."""
    import aio_pika

    connection = await aio_pika.connect(amqp_broker.URL)
    async with connection:
        channel = await connection.channel()
        for command in commands:
            await channel.default_exchange.publish(
                aio_pika.Message(command.encode(), delivery_mode=2), f"{prefix}.commands"
            )


def test_a_command_delivered_twice_is_applied_once(beats: Beats) -> None:
    """A sender's retry after a lost confirm (same sequence number) changes nothing twice."""

    async def main() -> None:
        leader = beats.store()
        await leader.open()
        assert await leader.lead("leader", 10) is True
        before = await leader.version()
        once = Command.put("retrying-sender", 1, {"a": ENTRY})
        stale = Command.put("retrying-sender", 1, {"a": {"task": "never"}})
        await publish_raw(beats.prefix, once, once, stale)
        assert await leader.entries() == {"a": ENTRY}
        assert await leader.version() == before + 1
        await leader.close()

    run(main)


def test_a_senders_commands_apply_in_its_order_even_when_one_comes_back_late(
    beats: Beats, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Number 3 seen before 2 (2 was out of the queue, held by a reader or a dead leader)
    waits for 2; a number that never comes is given up on after GAP_WAIT."""
    from celeriac.beat import amqp_commands

    monkeypatch.setattr(amqp_commands, "GAP_WAIT", 0.5)
    first = Command.put("s", 1, {"a": {**ENTRY, "args": [1]}})
    second = Command.put("s", 2, {"a": {**ENTRY, "args": [2]}})
    third = Command.put("s", 3, {"a": {**ENTRY, "args": [3]}, "b": ENTRY})
    fifth = Command.put("s", 5, {"c": ENTRY})

    async def main() -> None:
        leader = beats.store()
        await leader.open()
        assert await leader.lead("leader", 10) is True
        await publish_raw(beats.prefix, first)
        assert (await leader.entries())["a"]["args"] == [1]
        await publish_raw(beats.prefix, third)
        assert (await leader.entries())["a"]["args"] == [1]  # 3 waits for 2
        await publish_raw(beats.prefix, second)
        entries = await leader.entries()
        assert entries["a"]["args"] == [3] and "b" in entries  # 2 then 3, not 3 then 2
        await publish_raw(beats.prefix, fifth)  # 4 never comes
        assert "c" not in await leader.entries()
        given_up = time.monotonic() + 10  # GAP_WAIT is 0.5 s here; the machine may be loaded
        while "c" not in await leader.entries():  # 4 given up on: 5 applies
            assert time.monotonic() < given_up, "a missing number was never given up on"
            await asyncio.sleep(0.05)
        await leader.close()

    run(main)


def test_the_queues_carry_the_arguments_the_design_needs(beats: Beats) -> None:
    async def main() -> None:
        store = beats.store()
        await store.open()
        assert await store.lead("solo", 10) is True
        await store.put_entries({"a": ENTRY})
        await store.close()

    run(main)
    table = amqp_broker.queue_table()
    prefix = beats.prefix
    leader = table[f"{prefix}.leader"]["arguments"]
    assert '{"x-single-active-consumer",true}' in leader
    for name in (f"{prefix}.state", f"{prefix}.view"):
        arguments = table[name]["arguments"]
        assert '{"x-max-length",1}' in arguments
        assert '{"x-overflow","drop-head"}' in arguments
        assert table[name]["messages"] == "1"  # one snapshot, the newest
    for name in BeatQueues(prefix).arguments():
        assert table[name]["type"] == "classic"
        assert '{"x-queue-type","classic"}' in table[name]["arguments"]
    assert table[f"{prefix}.commands"]["messages"] == "0"  # applied and acked
    # every message is persistent: the state and the tokens survive a broker restart
    out = amqp_broker.rabbitmqctl(
        "list_queues",
        "-q",
        "-p",
        amqp_broker.VHOST,
        "--no-table-headers",
        "name",
        "messages",
        "messages_persistent",
    )
    counts = {line.split("\t")[0]: line.split("\t")[1:] for line in out.splitlines()}
    for name in (f"{prefix}.state", f"{prefix}.view", f"{prefix}.leader"):
        messages, persistent = counts[name]
        assert int(messages) >= 1 and persistent == messages


def test_a_queue_declared_otherwise_and_a_bad_option_fail_at_start_naming_them(
    beats: Beats,
) -> None:
    import aio_pika

    async def main() -> None:
        connection = await aio_pika.connect(amqp_broker.URL)
        async with connection:
            channel = await connection.channel()
            await channel.declare_queue(f"{beats.prefix}.view", durable=True)
        store = beats.store()
        with pytest.raises(TransportError, match=rf"{beats.prefix}\.view.*other arguments"):
            await store.open()

    run(main)
    with pytest.raises(ImproperlyConfigured, match="heartbeat"):
        AmqpBeatStore(amqp_broker.URL + "?heartbeat=soon")
    with pytest.raises(ImproperlyConfigured, match="'confirm_timeout' must be a float"):
        AmqpBeatStore(amqp_broker.URL, {"confirm_timeout": "soon"})
