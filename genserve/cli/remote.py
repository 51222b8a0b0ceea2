"""The one way a `genserve` command talks to a server: `remote(target, timeout)` opens a Client with the
command's TLS options and turns every failure into one `error: ...` line (exit 1).

    with remote(target, timeout) as client:          # GenserveError, ValueError -> one line, exit 1
        picture = VAEModel(client, model, version).grid(n)

TLS: rather than one more option in each family's signature, the root app is a `TlsGroup`: when
typer builds the click commands, every command with a --target option (at any depth: generate, grid,
encode, stylize, dream, gan-grid, batch run, ...) gains --tls, --ca-cert, --client-cert and
--client-key (or $GENSERVE_TLS, $GENSERVE_CA_CERT, $GENSERVE_CLIENT_CERT, $GENSERVE_CLIENT_KEY),
checked and read before the work. `current_tls()` gives the running command's settings, which
`remote` passes to the Client it builds (a command that builds clients elsewhere, such as
`batch run`, passes `current_tls()` on itself); the Client has no process-wide default.

    genserve generate --target localhost:8500 --tls --ca-cert certs/ca.pem --seed-text "the "
"""

from __future__ import annotations

import contextvars
import functools
from contextlib import contextmanager
from typing import Annotated, Iterator, Optional

import typer

from genserve.cli.common import fail

TLS_ENV = {"tls": "GENSERVE_TLS", "ca_cert": "GENSERVE_CA_CERT", "client_cert": "GENSERVE_CLIENT_CERT",
           "client_key": "GENSERVE_CLIENT_KEY"}
_CURRENT_TLS: contextvars.ContextVar = contextvars.ContextVar("genserve_cli_tls", default=None)


def current_tls():
    """The running command's TLS (a genserve.clients.TlsSettings), or None for plaintext."""
    return _CURRENT_TLS.get()


@contextmanager
def remote(target: str, timeout: float) -> Iterator:
    """An open genserve.clients.Client for `target` with the command's TLS; on the way out, a
    GenserveError becomes `error: TARGET: CODE: details`, a ValueError (a wrong model family, a bad
    image) `error: message`. Ctrl-C goes through: the command's genserve.cli.common.on_interrupt says
    what was kept."""
    from genserve.clients import Client, GenserveError

    try:
        with Client(target, timeout=timeout, tls=current_tls(),
                    on_wait=lambda line: typer.echo(line, err=True)) as client:
            yield client
    except GenserveError as e:
        raise fail(f"{target}: {e.code.name}: {e.details}") from None
    except ValueError as e:
        raise fail(str(e)) from None


# -- the TLS options -------------------------------------------------------------------------------
def _tls_options_source(
    tls: Annotated[bool, typer.Option("--tls/--no-tls", envvar=TLS_ENV["tls"], help=(
        "Connect over TLS (implied by --ca-cert / --client-cert); the server's certificate must name "
        "the --target host."))] = False,
    ca_cert: Annotated[Optional[str], typer.Option("--ca-cert", envvar=TLS_ENV["ca_cert"], metavar="PATH", help=(
        "PEM file of the CA that signed the server's certificate (default: the system's roots)."))] = None,
    client_cert: Annotated[Optional[str], typer.Option("--client-cert", envvar=TLS_ENV["client_cert"],
                                                       metavar="PATH", help=(
        "PEM file of this client's certificate, for a server that verifies clients (mutual TLS)."))] = None,
    client_key: Annotated[Optional[str], typer.Option("--client-key", envvar=TLS_ENV["client_key"],
                                                      metavar="PATH", help=(
        "PEM file of the --client-cert's private key."))] = None,
) -> None:
    """Declares the TLS options once; typer turns them into the click parameters copied below."""


def _tls_params() -> list:
    """Fresh click parameters for the TLS options (built by typer itself from _tls_options_source)."""
    source = typer.Typer(add_completion=False)
    source.command()(_tls_options_source)
    return list(typer.main.get_command(source).params)


def tls_settings(tls: bool = False, ca_cert: str | None = None, client_cert: str | None = None,
                 client_key: str | None = None):
    """Check the TLS options and read their files. Returns a genserve.clients.TlsSettings, or None
    for plaintext; raises typer.Exit after one `error:` line."""
    from genserve.files import read_pem

    if bool(client_cert) != bool(client_key):
        raise fail("--client-cert and --client-key go together (mutual TLS): give both or neither")
    try:
        root, cert, key = (read_pem(value or None, option) for value, option in (
            (ca_cert, "--ca-cert"), (client_cert, "--client-cert"), (client_key, "--client-key")))
    except ValueError as e:
        raise fail(str(e)) from None
    if not (tls or root or cert):
        return None
    from genserve.clients import TlsSettings

    return TlsSettings(root_certificates=root, client_cert=cert, client_key=key)


def _with_tls(callback):
    @functools.wraps(callback)
    def run(*args, tls=False, ca_cert=None, client_cert=None, client_key=None, **kwargs):
        token = _CURRENT_TLS.set(tls_settings(tls, ca_cert, client_cert, client_key))
        try:
            return callback(*args, **kwargs)
        finally:
            _CURRENT_TLS.reset(token)

    return run


def add_tls_options(command) -> None:
    """Give every command under `command` (a click Command or Group) that has a `target` parameter
    the TLS options (see above); idempotent."""
    subcommands = getattr(command, "commands", None)
    if isinstance(subcommands, dict):  # a group (typer's click is vendored: duck typing)
        for sub in subcommands.values():
            add_tls_options(sub)
        return
    names = {p.name for p in command.params}
    if "target" in names and "tls" not in names and command.callback is not None:
        command.params.extend(_tls_params())
        command.callback = _with_tls(command.callback)


def _tls_group_class():
    from typer.core import TyperGroup

    class TlsGroup(TyperGroup):
        """The root group: adds the TLS options to every client command (add_tls_options); Ctrl-C
        anywhere ends with one line."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            add_tls_options(self)

        def invoke(self, ctx):
            """Ctrl-C in a command that does not say more (genserve.cli.common.on_interrupt in its
            body): one line and exit 130, not click's "Aborted!" and exit 1."""
            from genserve.cli.common import on_interrupt

            with on_interrupt("interrupted"):
                return super().invoke(ctx)

    return TlsGroup


TlsGroup = _tls_group_class()
