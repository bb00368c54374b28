"""What a worker does after a task of a workflow ends: the next step, the chord, the failure.

The message of a workflow task carries what comes after it (protocol v2's ``embed``): ``chain``,
the remaining steps (last first), and ``chord``, the body of the chord this task is a header member
of (with the group id in the ``group`` header). When the task ends for good:

- it succeeded and has a chain: the next step is sent with the result prepended to its arguments
  (and the rest of the chain with it);
- it failed (or was revoked or rejected): every remaining step of its chain is marked failed with
  the same error, so ``get()`` on the workflow's result raises instead of hanging (Celery 5 does
  the same); a remaining step that was a chord member is counted for that chord;
- it is a chord member: it is counted by one atomic step of the backend (``join_chord``), once
  per task id however often its message is delivered; the member that completes the count reads
  the header's results in order and sends the body with them, or fails the body with
  :class:`ChordError` (and calls the body's ``link_error``) when a member failed. A "body sent"
  mark lets a redelivered member finish the job of one that died between counting and sending.

No polling task and no lock held across calls: the backend's atomic step decides who sends.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.canvas.primitives import chain, chord, group
from celeriac.canvas.signature import Signature
from celeriac.context import Request
from celeriac.errors import ChordError
from celeriac.results.base import ResultMeta, exception_to_dict
from celeriac.utils.loops import thread_loop

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.results.base import Backend

logger = logging.getLogger("celeriac.worker")

#: Ends after which a workflow moves on (RETRY, IGNORED and a requeue are not ends).
_FAILED = frozenset({states.FAILURE, states.REVOKED, states.REJECTED})


def next_step_id(request: Request) -> str | None:
    """The frozen id of the chain step this task will send when it succeeds (its child)."""
    if not request.chain:
        return None
    step = request.chain[-1]
    options = step.get("options") if isinstance(step, Mapping) else None
    task_id = options.get("task_id") if isinstance(options, Mapping) else None
    return str(task_id) if task_id else None


def advance(
    app: Celeriac,
    request: Request,
    state: str,
    value: Any = None,
    exc: BaseException | None = None,
    traceback: str | None = None,
) -> None:
    """Move the workflow on after ``request`` ended in ``state``. Logs, never raises: the task's
    own outcome is already stored and its message must still be settled."""
    if request.is_eager or (state != states.SUCCESS and state not in _FAILED):
        return
    try:
        if state == states.SUCCESS and request.chain:
            _send_next(app, request, value)
        elif state in _FAILED and request.chain:
            error = exc if exc is not None else ChordError(f"{request.task}[{request.id}] {state}")
            for data in reversed(request.chain):
                fail(app, Signature.from_dict(data, app), error, traceback, errbacks=False)
        if request.chord and request.group:
            index = request.headers.get("group_index")
            join(app, request.group, request.id, request.chord, request.root_id, index)
    except Exception as error:
        logger.error(
            "Task %s[%s]: could not move its workflow on: %r", request.task, request.id, error
        )


def _send_next(app: Celeriac, request: Request, value: Any) -> None:
    """Send the next step; if that fails, fail it and the rest (``get()`` raises, not hangs)."""
    chain_data = list(request.chain or ())
    step = Signature.from_dict(chain_data.pop(), app)
    options: dict[str, Any] = {"parent_id": request.id, "root_id": request.root_id or request.id}
    if chain_data:
        if isinstance(step, chain | group | chord):
            # only a chain's last step is a workflow once normalised; be safe with old messages
            step = chain(step, *(Signature.from_dict(d, app) for d in reversed(chain_data)))
        else:
            options["chain"] = chain_data
    try:
        step.apply_async((value,), **options)
    except Exception as exc:
        logger.error(
            "Task %s[%s]: could not send its chain's next step: %r", request.task, request.id, exc
        )
        error = ChordError(f"could not send the next step of the chain: {exc!r}")
        fail(app, step, error, None, errbacks=False)
        for data in reversed(chain_data):
            fail(app, Signature.from_dict(data, app), error, None, errbacks=False)


def join(
    app: Celeriac,
    group_id: str,
    member_id: str,
    body_data: Any,
    root_id: str | None,
    index: int | None = None,
) -> None:
    """Count ``member_id`` in chord ``group_id``; the member that completes it sends the body.

    The body is sent at least once and, but for a crash between its publish and the mark that
    follows, exactly once: a redelivered member that finds the chord complete and no mark sends
    it (its frozen id makes a second copy one result, not two).
    """
    backend = app.backend
    if backend is None:
        logger.error("chord %s: no result backend, so its body can never run", group_id)
        return
    body = Signature.from_dict(body_data, app)
    added, count = backend.join_chord(group_id, member_id, index=index)
    size = body.options.get("chord_size")
    if size is None:  # a chord a Celery client sent keeps its size in the backend only
        size = backend.chord_size(group_id)
    if size is None or count != int(size):
        return
    sent_key = f"chord-sent:{group_id}"
    if not added and backend.incr(sent_key, 0) > 0:
        return  # a redelivered member: the body went out already
    try:
        _send_body(app, backend, group_id, body, root_id)
    except Exception as exc:
        logger.error("chord %s: could not send its body: %r", group_id, exc)
        fail(app, body, ChordError(f"could not send the chord body: {exc!r}"), None, errbacks=True)
    backend.incr(sent_key)
    backend.finish_chord(group_id)


def _send_body(
    app: Celeriac, backend: Backend, group_id: str, body: Signature, root_id: str | None
) -> None:
    """Read the header's results in order and send the body with them, or fail the body."""
    ids = backend.restore_group(group_id)
    # a Celery client saves no group record for a plain header: its members' entries say it all
    metas = backend.get_many(ids) if ids is not None else backend.chord_results(group_id)
    if metas is None:
        error = ChordError(f"chord {group_id}: its group record is gone (expired?)")
        fail(app, body, error, None, errbacks=True)
        return
    for meta in metas:
        if meta.status == states.SUCCESS:
            continue
        cause = meta.exception() if meta.status in states.EXCEPTION_STATES else None
        why = f"raised {cause!r}" if cause is not None else f"has no result ({meta.status})"
        fail(
            app, body, ChordError(f"Dependency {meta.task_id} {why}"), meta.traceback, errbacks=True
        )
        return
    body.apply_async(([m.result for m in metas],), root_id=root_id)


def fail(
    app: Celeriac,
    sig: Signature,
    exc: BaseException,
    traceback: str | None,
    *,
    errbacks: bool,
) -> None:
    """Mark every task of ``sig`` (a step that will now never run) FAILURE with ``exc``; a task
    that was a chord member is counted for its chord, so that chord does not wait forever. With
    ``errbacks``, the workflow's own ``link_error`` callbacks are called once."""
    if isinstance(sig, chain):
        for i, task in enumerate(sig.tasks):
            fail(app, task, exc, traceback, errbacks=errbacks and i == 0)
    elif isinstance(sig, group):
        for task in sig.tasks:
            fail(app, task, exc, traceback, errbacks=errbacks)
    elif isinstance(sig, chord):
        for task in sig.header.tasks:
            fail(app, task, exc, traceback, errbacks=False)
        fail(app, sig.kwargs["body"], exc, traceback, errbacks=errbacks)
    else:
        _fail_task(app, sig, exc, traceback, errbacks)


def _fail_task(
    app: Celeriac, sig: Signature, exc: BaseException, traceback: str | None, errbacks: bool
) -> None:
    task_id = sig.id
    backend = app.backend
    if task_id is None:
        return
    if backend is not None:
        backend.store(
            ResultMeta(
                task_id,
                states.FAILURE,
                exception_to_dict(exc),
                traceback,
                name=sig.task,
                group_id=sig.options.get("group_id"),
            )
        )
    if errbacks:
        for data in sig.options.get("link_error") or ():
            errback = Signature.from_dict(data, app)
            if takes_request(errback):
                request = Request(task_id, sig.task, sig.args, dict(sig.kwargs))
                request.group = sig.options.get("group_id")
                call_errback(errback, request, exc, traceback)
            else:
                errback.apply_async((task_id,))
    body = sig.options.get("chord")
    group_id = sig.options.get("group_id")
    if body and group_id:
        join(app, str(group_id), task_id, body, None, sig.options.get("group_index"))


def takes_request(errback: Signature) -> bool:
    """Celery's two errback forms: ``on_error(task_id)`` is sent as a task; one whose function
    still takes three arguments after its signature's own (``handler(request, exc, traceback)``)
    is called right where the failure is known, with them."""
    task = errback.app.tasks.get(errback.task) if errback.app is not None else None
    if task is None:
        return False
    try:
        params = list(inspect.signature(task.fn).parameters.values())[1 if task.bind else 0 :]
    except (TypeError, ValueError):
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) - len(errback.args) >= 3


def call_errback(
    errback: Signature, request: Request, exc: BaseException | None, traceback: str | None
) -> None:
    """Call a ``(request, exc, traceback)`` errback here (an ``async def`` one to its end)."""
    value = errback(request, exc, traceback)
    if errback.type.is_async:
        thread_loop().run_until_complete(value)
