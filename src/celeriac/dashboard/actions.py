"""What an operator can do from the page, each through the control channel (or the broker, for
queues and dead letters), each written to the audit log: who, what, on what, how it went.

* retry a failed (or revoked, or rejected) task: send it again with the name and arguments its
  events recorded (Flower has no retry: flower#17). The arguments are the repr the worker sent
  (Celery's ``argsrepr``), read back with :func:`ast.literal_eval`: values that are not
  literals (an object's repr), or a repr that was cut short, cannot be sent again, and the
  action says so instead of guessing;
* revoke, or terminate, a task; set a task type's rate limit; grow or shrink a worker's pool;
* purge a queue; requeue or delete dead letters; pause, resume or run now a beat entry.

Every function returns an :class:`Outcome` and never raises for a refused or failed action:
the failure is the outcome, audited like a success.
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from celeriac.dashboard import deadletters
from celeriac.dashboard.queries import task as stored_task
from celeriac.dashboard.runtime import Dashboard
from celeriac.dashboard.store import MAX_TEXT

#: States a task can be retried from.
RETRYABLE = ("FAILURE", "REVOKED", "REJECTED")


@dataclass(frozen=True)
class Actor:
    """Who acts: a description for the audit log (role and client address) and the role."""

    who: str
    role: str


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str
    #: Where the page goes next (a task retried: the new task).
    location: str | None = None
    #: The audit log's row for it.
    audit_id: int = 0


def _replies_text(replies: list[dict[str, Any]] | None) -> tuple[bool, str]:
    """Summarise control replies ``[{node: {"ok"|"error": text}}]``."""
    if not replies:
        return False, "no worker answered"
    parts: list[str] = []
    ok = True
    for item in replies:
        for node, reply in item.items():
            if isinstance(reply, dict) and "error" in reply:
                ok = False
                parts.append(f"{node}: error: {reply['error']}")
            elif isinstance(reply, dict) and "ok" in reply:
                parts.append(f"{node}: {reply['ok']}")
            else:
                parts.append(f"{node}: {reply}")
    return ok, "; ".join(parts)


class Actions:
    """The actions of one dashboard."""

    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard
        self.app = dashboard.app
        self.store = dashboard.store

    def _audit(self, actor: Actor, action: str, target: str, detail: str, out: Outcome) -> Outcome:
        """Record the outcome (its text with passwords masked: an error may quote a URL)."""
        redact = self.dashboard.redact
        out = replace(out, message=redact(out.message))
        entry = self.store.audit(
            actor.who,
            actor.role,
            action,
            target,
            redact(detail),
            ("ok: " if out.ok else "failed: ") + out.message,
        )
        return replace(out, audit_id=entry)

    # -- tasks ------------------------------------------------------------------------------
    def retry(self, actor: Actor, task_id: str) -> Outcome:
        row = stored_task(self.store, task_id)
        out = self._retry(row)
        return self._audit(actor, "retry", task_id, (row or {}).get("name") or "", out)

    def _retry(self, row: dict[str, Any] | None) -> Outcome:
        if row is None:
            return Outcome(False, "no such task in the history")
        if row.get("state") not in RETRYABLE:
            return Outcome(False, f"a {row.get('state')} task is not retried (only {RETRYABLE})")
        if not row.get("name"):
            return Outcome(False, "its name is unknown (its task-received event was not seen)")
        try:
            args = _literal(row.get("args"), "()", "arguments")
            kwargs = _literal(row.get("kwargs"), "{}", "keyword arguments")
        except ValueError as exc:
            return Outcome(False, str(exc))
        if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
            return Outcome(False, "its arguments are not a tuple and a dict")
        try:
            result = self.app.send_task(str(row["name"]), tuple(args), kwargs)
        except Exception as exc:
            return Outcome(False, f"sending failed: {exc}")
        return Outcome(True, f"sent again as {result.id}")

    def revoke(self, actor: Actor, task_id: str, terminate: bool, signal: str) -> Outcome:
        try:
            replies = self.app.control.revoke(
                task_id, terminate=terminate, signal=signal or "SIGTERM", reply=True, timeout=2.0
            )
            ok, text = _replies_text(replies)
            out = Outcome(True, f"revoked ({text})") if ok or not replies else Outcome(False, text)
        except Exception as exc:
            out = Outcome(False, f"{type(exc).__name__}: {exc}")
        action = "terminate" if terminate else "revoke"
        return self._audit(actor, action, task_id, f"signal={signal}" if terminate else "", out)

    def rate_limit(self, actor: Actor, task_name: str, rate: str) -> Outcome:
        if not task_name:
            out = Outcome(False, "which task type?")
        else:
            try:
                replies = self.app.control.rate_limit(
                    task_name, rate or None, reply=True, timeout=2.0
                )
                ok, text = _replies_text(replies)
                out = Outcome(ok, text)
            except Exception as exc:
                out = Outcome(False, f"{type(exc).__name__}: {exc}")
        return self._audit(actor, "rate_limit", task_name, f"rate={rate or 'none'}", out)

    def pool(self, actor: Actor, hostname: str, grow: bool, n: int) -> Outcome:
        control = self.app.control
        change = control.pool_grow if grow else control.pool_shrink
        try:
            ok, text = _replies_text(change(n, destination=[hostname], reply=True, timeout=2.0))
            out = Outcome(ok, text)
        except Exception as exc:
            out = Outcome(False, f"{type(exc).__name__}: {exc}")
        action = "pool_grow" if grow else "pool_shrink"
        return self._audit(actor, action, hostname, f"n={n}", out)

    # -- queues and dead letters (on the background loop) -----------------------------------
    async def purge(self, actor: Actor, queue: str) -> Outcome:
        dashboard = self.dashboard

        async def run() -> int:
            return await (await dashboard.transport()).purge(queue)

        try:
            removed = await dashboard.call(run())
            out = Outcome(True, f"{removed} message{'s' if removed != 1 else ''} removed")
        except Exception as exc:
            out = Outcome(False, f"{type(exc).__name__}: {exc}")
        return await asyncio.to_thread(self._audit, actor, "purge", queue, "", out)

    async def dead_letters(
        self,
        actor: Actor,
        queue: str,
        action: str,
        selected: Sequence[str],
        text: str,
        group: str,
        everything: bool,
    ) -> Outcome:
        """``action`` (``requeue`` or ``delete``) the ``selected`` fingerprints, or with
        ``everything`` every letter of ``queue`` matching ``text`` and ``group``."""
        dashboard = self.dashboard
        handled = await asyncio.to_thread(self.store.handled_letters, queue)
        wanted = set(selected)

        async def run() -> tuple[
            list[deadletters.Letter], list[tuple[deadletters.Letter, str]], int
        ]:
            transport = await dashboard.transport()
            found = await deadletters.letters(transport, queue, handled)
            if everything:
                chosen = [item for item in found if item.matches(text, group)]
            else:
                chosen = [item for item in found if item.fingerprint in wanted]
            failed: list[tuple[deadletters.Letter, str]] = []
            if action == "requeue":
                failed = await deadletters.requeue(transport, chosen)
            done = [item for item in chosen if item not in {f for f, _ in failed}]
            removed = await deadletters.remove(transport, queue, done)
            return done, failed, removed

        if action not in ("requeue", "delete"):
            out = Outcome(False, f"unknown action {action!r}")
        else:
            try:
                done, failed, removed = await dashboard.call(run())
                if removed < len(done):  # the broker kept some: hide them here
                    await asyncio.to_thread(
                        self.store.mark_letters,
                        [(i.fingerprint, queue, action, i.task_id or "") for i in done],
                    )
                verb = "requeued" if action == "requeue" else "deleted"
                message = f"{len(done)} dead letter{'s' if len(done) != 1 else ''} {verb}"
                if removed < len(done) and action == "delete":
                    message += " (hidden here: the broker keeps what it cannot delete)"
                if failed:
                    message += "; not: " + "; ".join(f"{i.task_id}: {why}" for i, why in failed)
                out = Outcome(bool(done) or not failed, message)
            except Exception as exc:
                out = Outcome(False, f"{type(exc).__name__}: {exc}")
        what = "all matching" if everything else f"{len(wanted)} selected"
        detail = f"{what}; filter={text!r}; reason={group!r}"
        return await asyncio.to_thread(
            self._audit, actor, f"dead_letters_{action}", queue, detail, out
        )

    # -- beat -------------------------------------------------------------------------------
    def beat(self, actor: Actor, name: str, action: str) -> Outcome:
        beat = self.app.beat
        chosen: dict[str, Callable[[str], Any]] = {
            "pause": beat.pause,
            "resume": beat.resume,
            "run_now": beat.run_now,
        }
        run = chosen.get(action)
        if run is None:
            out = Outcome(False, f"unknown action {action!r}")
        else:
            try:
                result = run(name)
                sent = getattr(result, "id", None)
                out = Outcome(True, f"sent as {sent}" if sent else f"{name}: {action} done")
            except Exception as exc:
                out = Outcome(False, f"{type(exc).__name__}: {exc}")
        return self._audit(actor, f"beat_{action}", name, "", out)


def _literal(text: Any, empty: str, what: str) -> Any:
    value = text if isinstance(text, str) and text.strip() else empty
    if len(value) >= MAX_TEXT - 1 or value.endswith(("\u2026", "...")):
        raise ValueError(f"its {what} were cut short when recorded, so it cannot be sent again")
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError(
            f"its {what} ({value[:80]}) are not Python literals, so it cannot be sent again"
        ) from None
