"""Options and helpers every `genserve` command module shares (imported by genserve/cli/<family>.py).

No TensorFlow, no import of the app: family modules import this, the app imports the families.
"""

from __future__ import annotations

from typing import Annotated

import typer

# The server address every client command takes: --target, else $GENSERVE_TARGET, else TF Serving's port.
DEFAULT_TARGET = "127.0.0.1:8500"
TargetOpt = Annotated[str, typer.Option("--target", envvar="GENSERVE_TARGET",
                                        help="Server address host:port (TF Serving or `genserve serve`).")]


def fail(message: str, code: int = 1) -> "typer.Exit":
    """Print a one-line error to stderr and return the Exit to raise: `raise fail("...")`."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=code)
