"""Declaring and sending tasks: options, routing, headers. No worker involved."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from celeriac import Celeriac, Exchange, ImproperlyConfigured, Queue, Task
from celeriac.protocol.codec import decode_body
from celeriac.transports.base import Delivery


def received(app: Celeriac, queue: str = "celery", count: int = 10) -> list[Delivery]:
    transport = app.create_transport()

    async def run() -> list[Delivery]:
        await transport.connect()
        got = await transport.get([queue], count, timeout=0)
        await transport.requeue(got)
        return got

    return asyncio.run(run())


def test_task_name_and_call_runs_locally(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    assert add.name == f"{__name__}.add"
    assert add(2, 3) == 5
    assert app.tasks[add.name] is add


def test_unknown_task_option_fails_at_declaration(app: Celeriac) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"unknown task option\(s\) \['max_retry'\]"):

        @app.task(max_retry=3)
        def f() -> None: ...


def test_autoretry_for_must_hold_exceptions(app: Celeriac) -> None:
    with pytest.raises(ImproperlyConfigured, match="autoretry_for"):

        @app.task(autoretry_for=("ValueError",))
        def f() -> None: ...


def test_async_def_is_a_task(app: Celeriac) -> None:
    @app.task
    async def double(x: int) -> int:
        return 2 * x

    assert double.is_async
    assert asyncio.run(double(4)) == 8


def test_delay_checks_arguments_at_send_time(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(TypeError, match="missing a required argument"):
        add.delay(1)  # type: ignore[call-arg]


def test_unknown_send_option_fails(app: Celeriac) -> None:
    @app.task
    def f() -> None: ...

    with pytest.raises(TypeError, match="countdwn"):
        f.apply_async(countdwn=3)


def test_message_headers_follow_protocol_v2(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.apply_async((2, 3), priority=7, headers={"x-trace": "abc"})
    [delivery] = received(app)
    message = delivery.decode()
    headers = message.headers
    assert headers["task"] == add.name
    assert headers["id"] == result.id
    assert headers["root_id"] == result.id
    assert headers["parent_id"] is None
    assert headers["retries"] == 0
    assert headers["argsrepr"] == "(2, 3)"
    assert headers["kwargsrepr"] == "{}"
    assert headers["lang"] == "py"
    assert headers["x-trace"] == "abc"
    assert message.priority == 7
    assert message.content_type == "application/json"
    args, kwargs, embed = decode_body(message, accept=["json"], codecs=app.codecs)
    assert (args, kwargs) == ([2, 3], {})
    assert set(embed) == {"callbacks", "errbacks", "chain", "chord"}


def test_countdown_and_expires_become_headers_and_broker_delay(app: Celeriac) -> None:
    @app.task
    def f() -> None: ...

    before = datetime.now(UTC)
    f.apply_async(countdown=3600, expires=7200)
    assert received(app) == []  # delayed on the broker, not deliverable yet
    transport = app.create_transport()

    async def size() -> int:
        await transport.connect()
        return await transport.size("celery")

    assert asyncio.run(size()) == 1
    eta = datetime.now(UTC) + timedelta(seconds=3600)
    f.apply_async(eta=eta - timedelta(days=1))  # eta in the past: deliverable now
    [delivery] = received(app)
    assert delivery.decode().eta is not None
    assert delivery.decode().eta < before  # type: ignore[operator]


def test_expires_header_is_absolute(app: Celeriac) -> None:
    @app.task
    def f() -> None: ...

    f.apply_async(expires=60)
    [delivery] = received(app)
    expires = delivery.decode().expires
    assert expires is not None
    assert 50 < (expires - datetime.now(UTC)).total_seconds() <= 60


def test_routing_by_task_option_setting_and_send_option() -> None:
    app = Celeriac(
        "r",
        broker="memory://routing-test",
        task_routes={"r.email.*": {"queue": "mail"}},
        task_queues=[
            Queue("celery"),
            Queue("mail"),
            Queue("io"),
            Queue("eu", exchange=Exchange("orders", "topic"), routing_key="orders.eu.#"),
        ],
    )

    @app.task(name="r.email.send")
    def send() -> None: ...

    @app.task(name="r.fetch", queue="io")
    def fetch() -> None: ...

    @app.task(name="r.plain")
    def plain() -> None: ...

    send.delay()
    fetch.delay()
    plain.delay()
    plain.apply_async(queue="mail")
    app.send_task("r.order", exchange="orders", routing_key="orders.eu.paris")
    app.send_task("r.order", exchange="orders", routing_key="orders.us.nyc")  # reaches nothing
    assert [d.decode().task for d in received(app, "mail")] == ["r.email.send", "r.plain"]
    assert [d.decode().task for d in received(app, "io")] == ["r.fetch"]
    assert [d.decode().task for d in received(app, "celery")] == ["r.plain"]
    assert [d.decode().task for d in received(app, "eu")] == ["r.order"]


def test_send_task_by_name_needs_no_registration(app: Celeriac) -> None:
    result = app.send_task("somewhere.else", (1,), {"k": 2})
    [delivery] = received(app)
    assert delivery.decode().task == "somewhere.else"
    assert delivery.decode().id == result.id


def test_serializer_and_compression_options(app: Celeriac) -> None:
    @app.task(serializer="msgpack", compression="zlib")
    def f(x: bytes) -> None: ...

    f.delay(b"\x00payload")
    [delivery] = received(app)
    message = delivery.decode()
    assert message.content_type == "application/x-msgpack"
    assert message.headers["compression"] == "application/x-gzip"
    args, _, _ = decode_body(message, accept=["msgpack"], codecs=app.codecs)
    assert args == [b"\x00payload"]


def test_link_and_link_error_travel_as_signatures(app: Celeriac) -> None:
    @app.task
    def f(x: int) -> int:
        return x

    f.apply_async((1,), link=f.s(10), link_error=[f.si(0)])
    [delivery] = received(app)
    _, _, embed = decode_body(delivery.decode(), accept=["json"], codecs=app.codecs)
    assert embed["callbacks"][0]["task"] == f.name
    assert embed["callbacks"][0]["args"] == [10]
    assert embed["errbacks"][0]["immutable"] is True


def test_bulk_send_many(app: Celeriac) -> None:
    results = app.send_many([("t.a", (i,), {}) for i in range(100)])
    assert len({r.id for r in results}) == 100
    assert len(received(app, count=200)) == 100


def test_async_producer_twins(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    async def main() -> str:
        result = await add.adelay(1, 2)
        other = await add.aapply_async((3, 4), countdown=None)
        return result.id + other.id

    assert len(asyncio.run(main())) == 72
    assert len(received(app)) == 2


def test_bound_task_sees_its_request_and_typing_is_paramspec(app: Celeriac) -> None:
    @app.task(bind=True)
    def whoami(self: Task[[int], str], x: int) -> str:
        return f"{self.name}:{self.request.is_eager}:{x}"

    assert whoami(3) == f"{whoami.name}:True:3"


def test_always_eager_runs_in_process() -> None:
    app = Celeriac("e", broker="memory://eager", task_always_eager=True)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    started = time.monotonic()
    assert add.delay(2, 3).get() == 5
    assert time.monotonic() - started < 5


def test_a_task_class_shadow_name_names_each_send(app: Celeriac) -> None:
    """Celery's ``shadow_name`` hook on a task class gives a send its display name; a task
    without one sends none, and ``shadow=`` given to the send wins over the hook."""

    class Named(Task[..., None]):
        def shadow_name(self, args: tuple[object, ...], kwargs: object, options: object) -> str:
            return f"report-{args[0]}"

    @app.task(base=Named)
    def report(n: int) -> None:
        pass

    @app.task
    def plain() -> None:
        pass

    report.delay(7)
    report.apply_async((8,), shadow="given")
    plain.delay()
    shadows = [d.decode().headers.get("shadow") for d in received(app)]
    assert shadows == ["report-7", "given", None]
