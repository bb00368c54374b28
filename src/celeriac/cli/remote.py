"""What ``celeriac inspect``, ``celeriac control`` and ``celeriac status`` share: their options,
checking a command against the table of :mod:`celeriac.control.meta`, printing replies as
Celery's command line prints them, and Celery's exit status when no worker answered.

``-d/--destination`` (comma-separated node names), ``-t/--timeout`` (seconds to wait for
replies; with destinations, the wait ends as soon as each has answered) and ``-j/--json`` (the
replies as one JSON document, for scripts) are Celery's options, with Celery's defaults.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from celeriac.control.meta import CommandInfo, Kind, compile_arguments, of_kind

F = TypeVar("F", bound=Callable[..., Any])

#: Celery's exit status when no node replied (``EX_UNAVAILABLE``).
EX_UNAVAILABLE = 69
NO_REPLY = "No nodes replied within time constraint"


def destinations(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if not value:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    return names or None


def remote_options(fn: F) -> F:
    """``-t``, ``-d`` and ``-j``, as Celery's remote-control commands take them."""
    fn = click.option("-j", "--json", "as_json", is_flag=True, help="Print the replies as JSON.")(
        fn
    )
    fn = click.option(
        "-d",
        "--destination",
        callback=destinations,
        help="Comma-separated node names to ask (default: every worker).",
    )(fn)
    return click.option(
        "-t",
        "--timeout",
        type=click.FloatRange(min=0.0),
        default=1.0,
        show_default=True,
        help="Seconds to wait for replies.",
    )(fn)


def list_option(kind: Kind) -> Callable[[F], F]:
    """``--list``: the commands of ``kind`` with their arguments and help, then exit."""

    def show(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if not value or ctx.resilient_parsing:
            return
        formatter = click.HelpFormatter()
        with formatter.section(f"{kind.capitalize()} Commands"):
            formatter.write_dl(
                [
                    (f"{name} {info.signature}".strip(), info.help)
                    for name, info in of_kind(kind).items()
                ]
            )
        click.echo(formatter.getvalue(), nl=False)
        ctx.exit()

    return click.option(
        "--list",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=show,
        help=f"List the {kind} commands and exit.",
    )


def command_arguments(
    kind: Kind, name: str, args: tuple[str, ...]
) -> tuple[CommandInfo, dict[str, Any]]:
    """The command ``name`` of ``kind`` and its arguments from the command line; a usage error
    naming the available commands, or the arguments it takes, otherwise."""
    choices = of_kind(kind)
    info = choices.get(name)
    if info is None:
        raise click.UsageError(
            f"Command {name} not recognized. Available {kind} commands: {', '.join(choices)}"
        )
    try:
        return info, compile_arguments(info, list(args))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def pretty(reply: Any) -> tuple[str, str]:
    """``("OK" or "ERROR", text)`` for one node's reply, as Celery prints it."""
    if isinstance(reply, list):
        return "OK", "\n".join(f"* {_item(item)}" for item in reply) if reply else "- empty -"
    if isinstance(reply, dict):
        if "ok" in reply:
            return "OK", _indent(pretty(reply["ok"])[1])
        if "error" in reply:
            return "ERROR", _indent(pretty(reply["error"])[1])
        return "OK", json.dumps(reply, sort_keys=True, indent=4, default=repr)
    if isinstance(reply, str):
        return "OK", reply
    return "OK", repr(reply)


def _item(item: Any) -> str:
    return item if isinstance(item, str) else json.dumps(item, sort_keys=True, default=repr)


def _indent(text: str, by: int = 4) -> str:
    return "\n".join(" " * by + line for line in text.splitlines())


def say(node: str, reply: Any, show_body: bool = True) -> None:
    status, body = pretty(reply)
    click.echo(f"-> {node}: {status}")
    if show_body and body:
        click.echo(_indent(body))


def say_replies(by_node: dict[str, Any], show_body: bool = True) -> None:
    for node, reply in by_node.items():
        say(node, reply, show_body)


def nodes_online(count: int) -> None:
    click.echo(f"\n{count} {'node' if count == 1 else 'nodes'} online.")


class NoReply(click.ClickException):
    """Celery's failure when nobody answered: one line, exit status 69."""

    exit_code = EX_UNAVAILABLE


def no_reply() -> click.ClickException:
    return NoReply(NO_REPLY)


def json_text(value: Any) -> str:
    return json.dumps(value, default=repr)
