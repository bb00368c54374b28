"""Signed messages end to end, on each broker, with a real worker process that verifies.

The producer signs with its key, the worker trusts the producer's key and its own (it signs
what it sends: a retry, a chain's next step). Unsigned, stranger-signed and tampered messages
land in the dead-letter queue with their reason while the worker goes on; an unsigned remote
control request (even ``shutdown``) is ignored and logged, a signed one is answered with a
signed reply.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps.signed_tasks import BROKER_ENV, OPTIONS_ENV, QUEUE_ENV, RESULTS_ENV, build_app
from events_brokers import Broker, open_broker
from worker_harness import WorkerProcess, child_env, start_cli_worker, wait_until

from celeriac import Celeriac, chain
from celeriac.protocol.keys import generate_key_pem
from celeriac.protocol.message import Message, task_message
from celeriac.transports.base import DeadLetter, Outgoing

WAIT = 30.0


@pytest.fixture(params=["sqlite", "redis", "amqp"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    with open_broker(request.param, tmp_path) as found:
        yield found


def write_pair(folder: Path, name: str) -> Path:
    folder.mkdir(exist_ok=True)
    private, public = generate_key_pem()
    (folder / f"{name}.key").write_bytes(private)
    (folder / f"{name}.pem").write_bytes(public)
    return folder / f"{name}.key"


class Fleet:
    """A verifying worker and three producers: trusted, unsigned, and a stranger."""

    def __init__(self, broker: Broker, tmp_path: Path) -> None:
        self.broker = broker
        self.results = tmp_path / "results.db"
        trusted = tmp_path / "trusted"
        self.store = str(trusted / "*.pem")
        worker_key = write_pair(trusted, "worker")
        self.apps: list[Celeriac] = []
        self.signed = self.app(security_key=str(write_pair(trusted, "producer")))
        self.verifying = self.app(
            security_key=str(trusted / "producer.key"), security_cert_store=self.store
        )
        self.unsigned = self.app()
        self.stranger = self.app(security_key=str(write_pair(tmp_path / "other", "stranger")))
        env = child_env(
            {
                BROKER_ENV: broker.url,
                OPTIONS_ENV: json.dumps(broker.options),
                QUEUE_ENV: broker.queue,
                RESULTS_ENV: str(self.results),
                "CELERIAC_SECURITY_KEY": str(worker_key),
                "CELERIAC_SECURITY_CERT_STORE": self.store,
            }
        )
        self.worker_name = f"signed-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
        self.worker: WorkerProcess = start_cli_worker(
            "apps.signed_tasks", env, tmp_path, "-n", self.worker_name
        )

    def app(self, **settings: str) -> Celeriac:
        made = build_app(
            self.broker.url, self.broker.options, self.broker.queue, str(self.results), **settings
        )
        self.apps.append(made)
        return made

    def dead_letters(self) -> list[DeadLetter]:
        async def read() -> list[DeadLetter]:
            transport = self.unsigned.create_transport()
            await transport.connect()
            try:
                return await transport.dead_letters(self.broker.queue)
            finally:
                await transport.close()

        return asyncio.run(read())

    def publish_raw(self, message: Message) -> None:
        """Straight to the broker, as someone with broker access would."""
        queue = self.unsigned.queues()[0]
        exchange = queue.exchange.name if queue.exchange is not None else ""  # the default

        async def send() -> None:
            transport = self.unsigned.create_transport()
            await transport.connect()
            try:
                await transport.declare_queue(queue)  # as the worker did: a no-op on the broker
                await transport.publish_batch(
                    [Outgoing(message, exchange, queue.routing_key or queue.name)]
                )
            finally:
                await transport.close()

        asyncio.run(send())

    def close(self) -> None:
        try:
            self.worker.stop()
        finally:
            for app in self.apps:
                app.close()


@pytest.fixture
def fleet(broker: Broker, tmp_path: Path) -> Iterator[Fleet]:
    made = Fleet(broker, tmp_path)
    try:
        yield made
    finally:
        made.close()


def test_signed_tasks_run_and_the_rest_is_dead_lettered_with_its_reason(fleet: Fleet) -> None:
    signed = fleet.signed
    assert signed.send_task("signed.add", (2, 3)).get(timeout=WAIT) == 5
    # the worker signs what it sends: a retry, a chain's next step
    assert signed.send_task("signed.retry_once").get(timeout=WAIT) == "again"
    add = signed.tasks["signed.add"]
    assert chain(add.s(1, 1), add.s(2)).delay().get(timeout=WAIT) == 4

    fleet.unsigned.send_task("signed.add", (1, 2))
    fleet.stranger.send_task("signed.add", (1, 2))
    security = signed.security
    assert security is not None and security.signer is not None
    genuine = security.signer.sign(
        task_message(
            task="signed.add",
            task_id=str(uuid.uuid4()),
            body=b"[[1, 2], {}, {}]",
            content_type="application/json",
            content_encoding="utf-8",
        )
    )
    fleet.publish_raw(
        Message(genuine.headers, b"[[100, 2], {}, {}]", genuine.content_type, "utf-8")
    )
    wait_until(lambda: len(fleet.dead_letters()) >= 3, WAIT, "three dead letters")
    reasons = sorted(letter.reason for letter in fleet.dead_letters())
    assert len(reasons) == 3, reasons
    for needle in ("changed after signing", "not signed", "not trusted"):
        assert any(needle in reason for reason in reasons), (needle, reasons)
    # the worker goes on
    assert signed.send_task("signed.add", (5, 5)).get(timeout=WAIT) == 10
    assert fleet.worker.running


def test_only_signed_remote_control_is_obeyed(fleet: Fleet) -> None:
    # the control listener subscribes just after "ready": ask until it answers (signed reply)
    answers: list[dict[str, object]] = []
    mine = [fleet.worker_name]

    def answered() -> bool:
        answers.extend(fleet.verifying.control.ping(mine, timeout=1))
        return bool(answers)

    wait_until(answered, WAIT, "a signed ping's signed reply")
    (name,) = answers[0]
    assert answers[0][name] == {"ok": "pong"}
    # addressed to this worker only: other workers may share the broker's control exchange
    assert fleet.unsigned.control.ping([name], timeout=1) == []
    fleet.unsigned.control.broadcast("shutdown", destination=[name])
    fleet.stranger.control.broadcast("shutdown", destination=[name])
    fleet.worker.wait_for_line("ignoring a control request: the message is not signed", WAIT)
    fleet.worker.wait_for_line("ignoring a control request: signed by key", WAIT)
    assert fleet.signed.send_task("signed.add", (2, 2)).get(timeout=WAIT) == 4
    assert fleet.worker.running
