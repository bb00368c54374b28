"""The worker's life: start its components, consume, shut down warm or cold.

Shutdown follows Celery's contract:

* first SIGTERM or SIGINT: **warm** - stop fetching, put back what was fetched but not started,
  let running tasks finish (up to ``worker_shutdown_timeout``), settle, exit 0;
* a second signal, or SIGQUIT: **cold** - put back every message not yet acked (running
  ``acks_late`` tasks included, so none is lost) and exit at once.

A component that cannot start (the broker cannot be reached, say) stops the worker with exit
status 1 and one clear line, not a traceback; so does a pid file that names a running worker.

Celery's worker signals are sent at Celery's moments: ``celeryd_init`` when the worker is created
(before it reads its settings, so a receiver can change them per node), ``worker_init``, then
``celeryd_after_setup`` once the queues are chosen, ``worker_ready`` once it consumes,
``worker_shutting_down`` when a shutdown begins or turns cold, ``worker_shutdown`` at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celeriac import signals
from celeriac.app.config import startup_notes
from celeriac.errors import ImproperlyConfigured
from celeriac.utils.daemon import Pidfile, PidfileLocked
from celeriac.utils.nodenames import default_nodename, node_format
from celeriac.utils.urls import redact_url
from celeriac.worker.components import Component, in_dependency_order
from celeriac.worker.consumer import FETCH_TIMEOUT, Consumer
from celeriac.worker.pools import pool_class
from celeriac.worker.pools.base import Pool, PoolOptions
from celeriac.worker.pools.starter import start_method
from celeriac.worker.state import WorkerState
from celeriac.worker.steps import (
    Connection,
    ConsumerStep,
    Heartbeat,
    PoolStep,
    StartupError,
    Timer,
)

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.transports.base import Transport

logger = logging.getLogger("celeriac.worker")

EXIT_OK = 0
EXIT_STARTUP_FAILED = 1


def builtin_components(worker: Worker) -> list[Component]:
    """The components every worker runs (those not enabled for this worker drop out)."""
    from celeriac.worker.autoscale import AutoscalerStep
    from celeriac.worker.beat_step import BeatStep
    from celeriac.worker.control import ControlStep
    from celeriac.worker.events_step import EventsStep
    from celeriac.worker.statedb import StateDBStep
    from celeriac.worker.steps import ReloaderStep
    from celeriac.worker.watchdog import WatchdogStep

    return [
        Timer(),
        StateDBStep(),
        Connection(),
        PoolStep(),
        ConsumerStep(),
        Heartbeat(),
        WatchdogStep(),
        EventsStep(),
        ControlStep(),
        AutoscalerStep(),
        ReloaderStep(),
        BeatStep(),
    ]


class Worker:
    """One worker process. ``run()`` blocks until shutdown and returns the exit status.

    ``hostname`` is the node name (``w1@host``; a name without ``@`` is the host part, as in
    Celery). ``max_memory_per_child`` is in KiB, as Celery's. ``pidfile`` and ``statedb`` are
    file names in which ``%n``, ``%h``... name this node (:mod:`celeriac.utils.nodenames`).
    """

    def __init__(
        self,
        app: Celeriac,
        *,
        queues: Sequence[str] | None = None,
        exclude_queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        pool: str | None = None,
        prefetch_multiplier: int | None = None,
        hostname: str | None = None,
        shutdown_timeout: float | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        autoscale: tuple[int, int] | None = None,
        reload: bool = False,
        app_spec: str | None = None,
        pidfile: str | None = None,
        statedb: str | None = None,
        without_heartbeat: bool = False,
        send_task_events: bool | None = None,
        beat: bool = False,
    ) -> None:
        options = {k: v for k, v in locals().items() if k not in ("self", "app")}
        self.app = app
        self.hostname = default_nodename(hostname)
        # before any setting is read: a receiver may change them for this node (Celery's hook)
        signals.celeryd_init.send(self.hostname, instance=self, conf=app.conf, options=options)
        conf = app.conf
        self.queues = app.queues(queues)
        if exclude_queues:
            excluded = set(exclude_queues)
            self.queues = [q for q in self.queues if q.name not in excluded]
            if not self.queues:
                raise ImproperlyConfigured(
                    f"-X/--exclude-queues {','.join(exclude_queues)} leaves no queue to consume"
                )
        self.autoscale = autoscale
        if autoscale is not None:
            concurrency = concurrency or autoscale[1]
        self.concurrency = concurrency or conf.worker_concurrency or (os.cpu_count() or 1)
        self.pool_name = pool or conf.worker_pool
        self.pool_cls = pool_class(self.pool_name)
        if self.pool_name == "prefork" and app.broker_url.startswith("memory:"):
            raise ImproperlyConfigured(
                "the memory broker lives inside one process, so prefork children cannot reach "
                "it: use -P threads, solo or asyncio with memory://"
            )
        # the signing keys are read now: a bad security_* setting stops the worker at start,
        # naming the setting, instead of dead-lettering every message
        self.security = app.security
        if self.security is not None:
            signer, verifier = self.security.signer, self.security.verifier
            logger.info(
                "signed messages: %s; %s",
                f"signing with key {signer.kid}" if signer else "not signing what it sends",
                f"running only messages signed by {len(verifier.trusted)} trusted key(s)"
                if verifier
                else "not verifying what it runs",
            )
        self.prefetch_multiplier = prefetch_multiplier or conf.worker_prefetch_multiplier
        self.shutdown_timeout = (
            shutdown_timeout if shutdown_timeout is not None else conf.worker_shutdown_timeout
        )
        self.reload = reload
        #: ``-B``: a beat runs inside this worker (see :mod:`celeriac.worker.beat_step`).
        self.embed_beat = beat
        memory_kib = max_memory_per_child or conf.worker_max_memory_per_child
        method = conf.worker_pool_start_method
        if self.pool_name == "prefork":  # a method this platform lacks fails now, named
            method = start_method(method)
        self.pool_options = PoolOptions(
            app_spec=app_spec or find_app_spec(app),
            max_tasks_per_child=max_tasks_per_child or conf.worker_max_tasks_per_child,
            max_memory_per_child=memory_kib * 1024 if memory_kib else None,
            time_limit=time_limit,
            soft_time_limit=soft_time_limit,
            start_method=method,
            fetch=bool(conf.worker_prefork_fetch),
        )
        self.pidfile = Pidfile(node_format(pidfile, self.hostname)) if pidfile else None
        statedb = statedb or conf.worker_state_db
        self.statedb = node_format(statedb, self.hostname) if statedb else None
        #: ``--without-heartbeat``: no ``heartbeat_sent`` (leases are renewed all the same).
        self.without_heartbeat = without_heartbeat
        #: ``-E``: Celery's ``worker_send_task_events`` (task events; worker events always go).
        self.send_task_events = (
            send_task_events if send_task_events is not None else conf.worker_send_task_events
        )
        self.state = WorkerState()
        #: What the components publish for each other (set while running).
        self.transport: Transport | None = None
        self.pool: Pool | None = None
        self.consumer: Consumer | None = None
        self.fetch_task: asyncio.Task[None] | None = None
        self.timer: Any = None
        self.components: list[Component] = []
        #: Set once the worker consumes; cleared again when it has stopped.
        self.ready = threading.Event()
        #: True when the worker stopped to be started again (``--reload``).
        self.restart_requested = False
        self._signals = 0
        self._stop: asyncio.Event | None = None
        self._cold: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- entry points -------------------------------------------------------------------------
    def run(self) -> int:
        """Run until told to stop; returns the process exit status.

        After a cold shutdown the process leaves at once: threads still running abandoned tasks
        cannot be stopped, and their messages are already back on the broker.
        """
        status = asyncio.run(self.run_async())
        if self.cold and not self.restart_requested:
            logging.shutdown()
            os._exit(status)
        return status

    @property
    def cold(self) -> bool:
        return self._cold is not None and self._cold.is_set()

    def request_stop(self, cold: bool = False, sig: str | None = None) -> None:
        """Ask for a warm (or cold) shutdown; a second warm request turns cold. ``sig``: the
        name of the signal that asked (for ``worker_shutting_down``), None from code."""
        self._signals += 1
        if self._stop is None or self._cold is None:
            return
        if self._cold.is_set():
            return  # already leaving as fast as it can
        if cold or self._signals > 1:
            logger.warning("cold shutdown: returning unacked messages to the broker")
            self._cold.set()
        else:
            logger.warning("warm shutdown: finishing running tasks (signal again for cold)")
        self._stop.set()
        how = "Cold" if self._cold.is_set() else "Warm"
        signals.worker_shutting_down.send(self.hostname, sig=sig, how=how, exitcode=EXIT_OK)

    def request_restart(self) -> None:
        """Stop warm so that the caller starts the worker again (used by ``--reload``)."""
        self.restart_requested = True
        self.request_stop()

    def stop(self, cold: bool = False) -> None:
        """Thread-safe :meth:`request_stop`, for code outside the worker's loop (tests, embeds)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.request_stop, cold)

    async def run_async(self) -> int:
        if self.pidfile is not None:
            try:
                self.pidfile.acquire()
            except PidfileLocked as exc:
                logger.critical("%s", exc)
                return EXIT_STARTUP_FAILED
        try:
            return await self._run()
        finally:
            self.ready.clear()
            if self.pidfile is not None:
                self.pidfile.release()

    # -- the life cycle -------------------------------------------------------------------------
    async def _run(self) -> int:
        self._stop, self._cold = asyncio.Event(), asyncio.Event()
        loop = self._loop = asyncio.get_running_loop()
        for signum, cold in (
            (signal.SIGTERM, False),
            (signal.SIGINT, False),
            (signal.SIGQUIT, True),
        ):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self.request_stop, cold, signum.name)
        # the tasks of the modules the app names (a worker made in code, not by -A, has not
        # imported them yet; loading twice imports nothing twice)
        self.app.import_default_modules()
        candidates = builtin_components(self) + [factory() for factory in self.app.components]
        self.components = in_dependency_order(c for c in candidates if c.enabled(self))
        started: list[Component] = []
        signals.worker_init.send(self)
        for note in startup_notes(self.app.conf):  # settings given that do nothing here
            logger.warning("%s", note)
        # the queues are chosen, nothing is connected: a receiver may still change self.queues
        signals.celeryd_after_setup.send(self.hostname, instance=self, conf=self.app.conf)
        try:
            for component in self.components:
                await component.start(self)
                started.append(component)
            self._ready()
            signals.worker_ready.send(self.consumer)
            await self._stop.wait()
            await self._shutdown()
            return EXIT_OK
        except StartupError as exc:
            logger.critical("%s", exc)
            return EXIT_STARTUP_FAILED
        finally:
            for component in reversed(started):
                try:
                    await component.stop(self)
                except Exception:
                    logger.exception("component %s failed to stop", component.name)
            if started:
                signals.worker_shutdown.send(self)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(signum)

    async def _shutdown(self) -> None:
        assert self._cold is not None
        consumer, fetch = self.consumer, self.fetch_task
        assert consumer is not None and fetch is not None
        consumer.stop_fetching()
        if not self._cold.is_set():
            warm = asyncio.create_task(self._drain(consumer, fetch))
            cold = asyncio.create_task(self._cold.wait())
            done, _ = await asyncio.wait({warm, cold}, return_when=asyncio.FIRST_COMPLETED)
            cold.cancel()
            if warm in done and warm.result():
                logger.info(
                    "%s stopped (warm): %d tasks processed", self.hostname, self.state.processed
                )
                return
            warm.cancel()
            self._cold.set()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(fetch, timeout=FETCH_TIMEOUT + 1)
        returned = await consumer.requeue_unacked()
        for handler in list(consumer.handlers):
            handler.cancel()
        logger.warning(
            "%s stopped (cold): %d unacked messages returned to the broker", self.hostname, returned
        )

    async def _drain(self, consumer: Consumer, fetch: asyncio.Task[None]) -> bool:
        await fetch
        returned = await consumer.requeue_waiting()
        if returned:
            logger.info("returned %d fetched, not started messages to the broker", returned)
        return await consumer.wait_running(self.shutdown_timeout)

    def fetch_ended(self, fetch: asyncio.Task[None]) -> None:
        """The fetch loop only ends when asked to; if it died, say why and stop warm."""
        if fetch.cancelled() or fetch.exception() is None:
            return
        logger.critical(
            "the consumer stopped on an internal error: %r",
            fetch.exception(),
            exc_info=fetch.exception(),
        )
        self.request_stop()

    def _ready(self) -> None:
        self.ready.set()
        logger.info(
            "%s ready: pool=%s concurrency=%d prefetch=%d queues=%s broker=%s tasks=%d "
            "components=%s",
            self.hostname,
            self.pool_name,
            self.concurrency,
            self.concurrency * self.prefetch_multiplier,
            ",".join(q.name for q in self.queues),
            redact_url(self.app.broker_url),
            len(self.app.tasks),
            ",".join(c.name for c in self.components),
        )


def find_app_spec(app: Celeriac) -> str | None:
    """``module:attr`` under which ``app`` can be imported again (by a prefork child).

    The CLI passes ``-A`` itself; for a worker built in code, look for the module-level name
    that holds this app (``__main__`` does not count: a child cannot import it by that name).
    """
    for module_name, module in list(sys.modules.items()):
        if module is None or module_name == "__main__":
            continue
        for attr, value in list(vars(module).items()):
            if value is app:
                return f"{module_name}:{attr}"
    return None
