"""Signals: light hooks into the worker's and the tasks' lives, with Celery's names and arguments.

Every signal of ``celery.signals`` exists here under the same name, with the same sender and
keyword arguments, so ``from celery.signals import task_prerun`` becomes
``from celeriac.signals import task_prerun`` and the receiver stays as it is. A receiver is a
plain (sync) function that takes keyword arguments and ``**kwargs`` (so that an argument added
later does not break it)::

    from celeriac.signals import task_prerun

    @task_prerun.connect
    def started(sender: Task, task_id: str, **kwargs: Any) -> None:
        log.info("starting %s[%s]", sender.name, task_id)

    @task_failure.connect(sender=fetch)            # only for this task
    def fetch_failed(sender: Task, exception: BaseException, **kwargs: Any) -> None: ...

    @celeryd_init.connect(sender="w1@example.com")  # only on that node
    def configure_w1(conf: Settings, **kwargs: Any) -> None: ...

Every receiver is also given ``signal`` (the :class:`Signal`) and ``sender``. ``sender=`` at
connect time filters by identity (``sender is``); a string matches a sender that equals it (a
node name) or whose ``name`` equals it (a task's name), so a receiver can be connected before the
task is declared.

When, where and with what each signal is sent. The worker's *main process* runs one asyncio
event loop that fetches and settles messages; tasks run in the *pool*: a thread of the threads
pool, the solo thread, or a prefork child process.

==================================  ===========================================================
**sending tasks**
``before_task_publish``             the sending process, before a task message is published.
                                    sender: the task's name; ``body``, ``exchange``,
                                    ``routing_key``, ``headers``, ``properties``, ``declare``,
                                    ``retry_policy``.
``after_task_publish``              the sending process, once it was published. sender: the task's
                                    name; ``body``, ``exchange``, ``routing_key``, ``headers``.
``import_modules``                  a loading app, before it imports its ``include``/``imports``
                                    modules and runs ``autodiscover_tasks``. sender: the app.
**the worker (main process)**
``celeryd_init``                    when the worker is created, before it reads its settings.
                                    sender: the node name (``w1@host``); ``instance``: the
                                    :class:`~celeriac.worker.worker.Worker`; ``conf``: the app's
                                    settings (change them here, per node); ``options``: the
                                    worker's options.
``worker_init``                     before the worker connects to the broker. sender: the Worker.
``celeryd_after_setup``             the queues are chosen (``-Q``, ``-X``), nothing is connected
                                    yet: a receiver may add to ``instance.queues``. sender: the
                                    node name; ``instance``, ``conf``.
``worker_ready``                    on the event loop, once the worker consumes. sender: the
                                    :class:`~celeriac.worker.consumer.Consumer`, as in Celery
                                    (``sender.app``; ``sender.controller`` is the Worker).
``heartbeat_sent``                  each beat of the worker's heartbeat, which renews the leases of
                                    the messages it holds (every ``worker_lease_renewal_interval``,
                                    by default a third of the lease); not with
                                    ``--without-heartbeat``. sender: the heartbeat component.
``worker_shutting_down``            a shutdown begins (warm, or turns cold). sender: the node name;
                                    ``sig``: the signal's name (``"SIGTERM"``), ``None`` when
                                    stopped from code; ``how``: ``"Warm"`` or ``"Cold"``;
                                    ``exitcode``: the status the worker will exit with.
``worker_shutdown``                 after the pool has stopped (warm or cold). sender: the Worker.
``worker_before_create_process``    before each prefork child is started. sender: the pool.
**messages (main process, on the event loop)**
``task_received``                   a message passed the checks (known task, not revoked, not
                                    expired, due), before it waits for a rate limit or a pool
                                    slot. sender: the Consumer; ``request``: the
                                    :class:`~celeriac.context.Request`.
``task_unknown``                    a message for a task this worker does not have (it is
                                    dead-lettered). sender: the Consumer; ``message``: the
                                    delivery; ``exc``: :class:`~celeriac.errors.NotRegistered`;
                                    ``name``, ``id``: the task's name and id.
``task_rejected``                   a message the worker cannot read (undecodable, a bad header, a
                                    content type not accepted; it is dead-lettered). sender: the
                                    Consumer; ``message``: the delivery; ``exc``: why.
``task_revoked``                    a revoked or expired task is dropped, or a running one is
                                    terminated. sender: the Task; ``request``: its Request;
                                    ``terminated``: whether it was running and stopped;
                                    ``signum``: the signal that stopped it, else ``None``;
                                    ``expired``: dropped because its ``expires`` passed.
**a prefork child**
``worker_process_init``             in each child, after the app is imported, before its first
                                    task. sender: the node name. Open per-process resources here
                                    (database connections must not cross a process boundary).
``worker_process_shutdown``         in each child as it leaves on its own (the pool stops, or it
                                    retires after ``max_tasks_per_child``...; not when killed).
                                    sender: the node name; ``pid``, ``exitcode``.
**running a task (in the pool)**
``task_prerun``                     just before the task's body runs. sender: the Task;
                                    ``task_id``, ``task``, ``args``, ``kwargs``.
``task_postrun``                    after the body, whatever the outcome; also ``retval``,
                                    ``state``.
``task_success``                    the task returned. ``result``, ``runtime`` (seconds).
``task_failure``                    the task raised and will not be retried. ``task_id``,
                                    ``exception``, ``args``, ``kwargs``, ``traceback``, ``einfo``.
``task_retry``                      the task is to be retried. ``request``, ``reason``, ``einfo``.
``task_internal_error``             defined with Celery's arguments (``task_id``, ``args``,
                                    ``kwargs``, ``request``, ``exception``, ``traceback``,
                                    ``einfo``); celeriac's executor does not send it yet.
**logging (the CLI, and each prefork child)**
``setup_logging``                   before logging is configured. sender: ``None``; ``loglevel``,
                                    ``logfile``, ``format``, ``colorize``. If any receiver is
                                    connected, celeriac configures no handler at all: the
                                    receivers do it (as in Celery).
``after_setup_logger``              after celeriac configured the root logger. sender: ``None``;
                                    ``logger``, ``loglevel``, ``logfile``, ``format``,
                                    ``colorize``.
``after_setup_task_logger``         then for the task logger (``celeriac.task``). Same arguments.
**beat**
``beat_init``                       a beat starts (``celeriac beat`` or in a worker). sender: the
                                    :class:`~celeriac.beat.scheduler.Beat`.
``beat_embedded_init``              a worker started with ``-B`` starts its beat. sender: the Beat.
``beat_missed``                     (celeriac's) slots of an entry were not fired: passed while no
                                    beat led (``catch_up``, ``misfire_grace``) or the last run was
                                    unfinished (``overlap="skip"``). sender: the Beat; ``entry``:
                                    its name; ``slots``: the datetimes given up.
**defined, never sent**
``user_preload_options``            celeriac's command line takes no user preload options.
``eventlet_pool_*``                 there is no eventlet pool (``-P asyncio`` runs ``async def``
                                    tasks, ``-P threads`` I/O-bound ones); gevent has no signals.
``task_sent``                       deprecated in Celery: use ``after_task_publish``.
==================================  ===========================================================

So with prefork, the ``task_*`` signals of a running task fire **in the child**: a receiver
connected in the parent after the fork never hears them, and state a receiver keeps lives in that
child. Connect receivers at import time, in the module that declares the tasks or the app.

A receiver runs inline, in the sending thread, on the task's or the event loop's time: it must be
fast and must not block. Above all, the main-process signals run *on the event loop*, where a
slow receiver stalls fetching and acking for every task. Hand slow work to a task or a queue.

A receiver that raises is logged (with its traceback) and does not stop the other receivers, the
task or the worker; :meth:`Signal.send` returns its exception as its result.

Receivers are held by **weak reference** by default, so that connecting an object's method does
not keep the object alive; a lambda or a function defined inside another function would therefore
vanish at once: connect those with ``weak=False``.
"""

from __future__ import annotations

from celeriac.signals.dispatch import Receiver, Signal

__all__ = [
    "Receiver",
    "Signal",
    "after_setup_logger",
    "after_setup_task_logger",
    "after_task_publish",
    "beat_embedded_init",
    "beat_init",
    "beat_missed",
    "before_task_publish",
    "celeryd_after_setup",
    "celeryd_init",
    "eventlet_pool_apply",
    "eventlet_pool_postshutdown",
    "eventlet_pool_preshutdown",
    "eventlet_pool_started",
    "heartbeat_sent",
    "import_modules",
    "setup_logging",
    "task_failure",
    "task_internal_error",
    "task_postrun",
    "task_prerun",
    "task_received",
    "task_rejected",
    "task_retry",
    "task_revoked",
    "task_sent",
    "task_success",
    "task_unknown",
    "user_preload_options",
    "worker_before_create_process",
    "worker_init",
    "worker_process_init",
    "worker_process_shutdown",
    "worker_ready",
    "worker_shutdown",
    "worker_shutting_down",
]

_LOGGING_ARGS = ("loglevel", "logfile", "format", "colorize")

# -- sending tasks ------------------------------------------------------------------------------
before_task_publish = Signal(
    "before_task_publish",
    providing_args=(
        "body",
        "exchange",
        "routing_key",
        "headers",
        "properties",
        "declare",
        "retry_policy",
    ),
    doc=(
        "In the sending process, just before a task message is published. sender: the task's "
        "name (str). ``body``: the message body (args, kwargs, embed); ``headers`` and "
        "``properties``: the message's, which a receiver may change in place; ``declare``: the "
        "queues declared with the send; ``retry_policy``: the publish retry policy or None."
    ),
)
after_task_publish = Signal(
    "after_task_publish",
    providing_args=("body", "exchange", "routing_key", "headers"),
    doc=(
        "In the sending process, once a task message was handed to the broker. sender: the "
        "task's name (str); ``body``, ``exchange``, ``routing_key`` and ``headers`` (id, task, "
        "...) as published."
    ),
)
task_sent = Signal(
    "task_sent",
    providing_args=("task_id", "task", "args", "kwargs", "eta", "taskset"),
    doc="Deprecated in Celery and never sent by celeriac: connect to after_task_publish.",
)

# -- the worker program -------------------------------------------------------------------------
celeryd_init = Signal(
    "celeryd_init",
    providing_args=("instance", "conf", "options"),
    doc=(
        "Main process, when the worker is created, before it reads its settings. sender: the "
        "node name (str); ``instance``: the Worker; ``conf``: the app's settings; ``options``: "
        "the worker's options (dict)."
    ),
)
celeryd_after_setup = Signal(
    "celeryd_after_setup",
    providing_args=("instance", "conf"),
    doc=(
        "Main process, once the queues are chosen, before connecting (``instance.queues`` may "
        "still change). sender: the node name (str); ``instance``: the Worker; ``conf``."
    ),
)

# -- the worker ---------------------------------------------------------------------------------
worker_init = Signal(
    "worker_init",
    doc="Main process, before connecting to the broker. sender: the Worker.",
)
worker_ready = Signal(
    "worker_ready",
    doc=(
        "Main process, on the event loop, once the worker consumes. sender: the Consumer "
        "(``sender.app``; ``sender.controller`` is the Worker)."
    ),
)
heartbeat_sent = Signal(
    "heartbeat_sent",
    doc=(
        "Main process, at each beat of the heartbeat that renews the leases of the messages "
        "the worker holds. sender: the heartbeat component."
    ),
)
worker_shutting_down = Signal(
    "worker_shutting_down",
    providing_args=("sig", "how", "exitcode"),
    doc=(
        "Main process, when a shutdown begins or turns cold. sender: the node name (str); "
        "``sig``: the signal's name or None; ``how``: 'Warm' or 'Cold'; ``exitcode``."
    ),
)
worker_shutdown = Signal(
    "worker_shutdown",
    doc="Main process, after the pool stopped (warm or cold). sender: the Worker.",
)
worker_before_create_process = Signal(
    "worker_before_create_process",
    doc="Main process, before each prefork child is started. sender: the pool.",
)
worker_process_init = Signal(
    "worker_process_init",
    doc=(
        "Each prefork child, after importing the app, before its first task. sender: the node "
        "name (str)."
    ),
)
worker_process_shutdown = Signal(
    "worker_process_shutdown",
    providing_args=("pid", "exitcode"),
    doc=(
        "Each prefork child, as it leaves on its own (not when killed). sender: the node name "
        "(str); ``pid``: the child's; ``exitcode``: the status it exits with."
    ),
)
import_modules = Signal(
    "import_modules",
    doc=(
        "When the app imports the modules it names (``include``, ``imports``, "
        "``autodiscover_tasks``), before it imports them: as a worker loads the app, in every "
        "process. sender: the app."
    ),
)

# -- messages -----------------------------------------------------------------------------------
task_received = Signal(
    "task_received",
    providing_args=("request",),
    doc=(
        "Main process, on the event loop, once a message passed the worker's checks and before "
        "it waits for a rate limit or a pool slot. sender: the Consumer; ``request``."
    ),
)
task_unknown = Signal(
    "task_unknown",
    providing_args=("message", "exc", "name", "id"),
    doc=(
        "Main process, on the event loop, for a message of a task this worker does not have. "
        "sender: the Consumer; ``message``: the delivery; ``exc``: NotRegistered; ``name``, "
        "``id``: the task's."
    ),
)
task_rejected = Signal(
    "task_rejected",
    providing_args=("message", "exc"),
    doc=(
        "Main process, on the event loop, for a message the worker cannot read (undecodable, "
        "bad header, content not accepted). sender: the Consumer; ``message``: the delivery; "
        "``exc``: why (a DecodeError)."
    ),
)
task_revoked = Signal(
    "task_revoked",
    providing_args=("request", "terminated", "signum", "expired"),
    doc=(
        "Main process, on the event loop, when a revoked or expired task is dropped or a running "
        "one terminated. sender: the Task; ``request``: its Request; ``signum``: the signal "
        "used to terminate, or None."
    ),
)

# -- running a task -----------------------------------------------------------------------------
task_prerun = Signal(
    "task_prerun",
    providing_args=("task_id", "task", "args", "kwargs"),
    doc="In the pool, before the task's body. sender: the Task (also given as ``task``).",
)
task_postrun = Signal(
    "task_postrun",
    providing_args=("task_id", "task", "args", "kwargs", "retval", "state"),
    doc=(
        "In the pool, after the task's body whatever its outcome. ``retval``: the return value "
        "or the exception; ``state``: the outcome's state (SUCCESS, FAILURE, RETRY...)."
    ),
)
task_success = Signal(
    "task_success",
    providing_args=("result", "runtime"),
    doc=(
        "In the pool, when the task returned. sender: the Task; ``result``: its return value; "
        "``runtime``: seconds it ran."
    ),
)
task_failure = Signal(
    "task_failure",
    providing_args=("task_id", "exception", "args", "kwargs", "traceback", "einfo"),
    doc=(
        "In the pool, when the task raised and will not be retried. ``traceback``: the "
        "exception's traceback object; ``einfo``: the formatted traceback (str) or None."
    ),
)
task_retry = Signal(
    "task_retry",
    providing_args=("request", "reason", "einfo"),
    doc=(
        "In the pool, when the task is to be retried. ``request``: the task's Request; "
        "``reason``: the exception (or Retry) behind it; ``einfo``: formatted traceback or None."
    ),
)
task_internal_error = Signal(
    "task_internal_error",
    providing_args=("task_id", "args", "kwargs", "request", "exception", "traceback", "einfo"),
    doc="Celery's, for an error of the worker itself around a task; not sent by celeriac yet.",
)

# -- logging ------------------------------------------------------------------------------------
setup_logging = Signal(
    "setup_logging",
    providing_args=_LOGGING_ARGS,
    doc=(
        "Before the CLI or a prefork child configures logging; sender: None. When any receiver "
        "is connected, celeriac configures no handler: the receivers do."
    ),
)
after_setup_logger = Signal(
    "after_setup_logger",
    providing_args=("logger", *_LOGGING_ARGS),
    doc="After celeriac configured the root logger (``logger``). sender: None.",
)
after_setup_task_logger = Signal(
    "after_setup_task_logger",
    providing_args=("logger", *_LOGGING_ARGS),
    doc="After celeriac configured the task logger ``celeriac.task`` (``logger``). sender: None.",
)

# -- defined for Celery's code, never sent --------------------------------------------------------
user_preload_options = Signal(
    "user_preload_options",
    providing_args=("app", "options"),
    doc="Never sent: celeriac's command line takes no user preload options.",
)
beat_init = Signal("beat_init", doc="A beat starts. sender: the Beat.")
beat_embedded_init = Signal(
    "beat_embedded_init", doc="A worker's embedded beat (-B) starts. sender: the Beat."
)
beat_missed = Signal(
    "beat_missed",
    providing_args=("entry", "slots"),
    doc=(
        "Slots of a beat entry were given up (catch_up, misfire_grace, overlap). sender: the "
        "Beat; ``entry``: the entry's name; ``slots``: the datetimes not fired."
    ),
)
eventlet_pool_started = Signal(
    "eventlet_pool_started", doc="Never sent: no eventlet pool (use -P asyncio or threads)."
)
eventlet_pool_preshutdown = Signal(
    "eventlet_pool_preshutdown", doc="Never sent: no eventlet pool (use -P asyncio or threads)."
)
eventlet_pool_postshutdown = Signal(
    "eventlet_pool_postshutdown", doc="Never sent: no eventlet pool (use -P asyncio or threads)."
)
eventlet_pool_apply = Signal(
    "eventlet_pool_apply",
    providing_args=("target", "args", "kwargs"),
    doc="Never sent: no eventlet pool (use -P asyncio or threads).",
)
