"""``celeriac keys generate|id``: make Ed25519 key pairs for signed messages, and name them.

``generate`` writes ``NAME.key`` (the private key, mode 0600, encrypted when a password is given
through an environment variable: never on the command line, where ``ps`` shows it) and
``NAME.pem`` (the public key, for every worker's ``security_cert_store``), and prints the key id
that signatures carry. ``id`` prints the id of each key or certificate file, to check which key a
fleet trusts during a rotation (docs: the key-rotation walk-through).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import click

from celeriac.errors import ImproperlyConfigured


@click.group("keys")
def command() -> None:
    """Key pairs for signed messages (the auth bundle)."""


def _need_auth_bundle() -> None:
    """A usage error, not an ImportError's traceback, when cryptography is not installed."""
    if importlib.util.find_spec("cryptography") is None:
        raise click.UsageError("signed messages need the auth bundle: pip install 'celeriac[auth]'")


@command.command("generate")
@click.argument("name")
@click.option(
    "--out",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where to write NAME.key and NAME.pem.",
)
@click.option(
    "--password-env",
    metavar="VAR",
    help="Encrypt the private key with the password in this environment variable.",
)
def generate(name: str, folder: Path, password_env: str | None) -> None:
    """Write a new Ed25519 key pair NAME.key / NAME.pem and print its key id."""
    _need_auth_bundle()
    from celeriac.protocol import keys, signing

    password = None
    if password_env:
        password = os.environ.get(password_env)
        if not password:
            raise click.BadParameter(f"${password_env} is not set", param_hint="--password-env")
    private_path, public_path = folder / f"{name}.key", folder / f"{name}.pem"
    for path in (private_path, public_path):
        if path.exists():
            raise click.UsageError(f"{path} exists: not overwriting a key")
    folder.mkdir(parents=True, exist_ok=True)
    private, public = keys.generate_key_pem(password)
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(private)
    public_path.write_bytes(public)
    kid = signing.key_id(keys.load_public_keys(public, setting="the new key")[0])
    click.echo(f"{private_path} (private: security_key of the senders)")
    click.echo(f"{public_path} (public: add to every worker's security_cert_store)")
    click.echo(f"key id {kid}")


@command.command("id")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def key_ids(files: tuple[str, ...]) -> None:
    """Print the key id of each private key, public key or certificate FILE."""
    _need_auth_bundle()
    from celeriac.protocol import keys, signing

    for name in files:
        text = Path(name).read_bytes() if Path(name).exists() else b""
        try:
            if b"PRIVATE KEY" in text:
                public = keys.load_private_key(text, setting=name).public_key()
                found = [public]
            else:
                found = keys.load_public_keys(name, setting=name)
        except ImproperlyConfigured as exc:
            raise click.UsageError(str(exc)) from None
        for key in found:
            click.echo(f"{signing.key_id(key)}  {name}")
