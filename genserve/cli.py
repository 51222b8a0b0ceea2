"""The `genserve` command line: thin commands that parse, build a config and call the library.

    genserve --help

Nothing heavy is imported at module level: `genserve --help` never imports TensorFlow. Each model
family registers its commands from its own module (`genserve/_cli_<family>.py`), so this file stays
small: the app, the shared sub-apps and the `serve` command.
"""

from __future__ import annotations

import importlib
import os
from typing import Annotated

import typer

app = typer.Typer(
    name="genserve",
    help="Generative models (text LSTM, VAE, style transfer) served over TF Serving's gRPC protocol.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
train_app = typer.Typer(help="Train a model.", no_args_is_help=True)
export_app = typer.Typer(help="Export a trained model as a versioned SavedModel.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate a trained model.", no_args_is_help=True)
plot_app = typer.Typer(help="Figures.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(export_app, name="export")
app.add_typer(eval_app, name="eval")
app.add_typer(plot_app, name="plot")


# The server address every client command takes: --target, else $GENSERVE_TARGET, else TF Serving's port.
DEFAULT_TARGET = "127.0.0.1:8500"
TargetOpt = Annotated[str, typer.Option("--target", envvar="GENSERVE_TARGET",
                                        help="Server address host:port (TF Serving or `genserve serve`).")]


def fail(message: str, code: int = 1) -> "typer.Exit":
    """Print a one-line error to stderr and return the Exit to raise: `raise fail("...")`."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=code)


# Family modules register their commands here; each exposes register(app, train_app, export_app, ...).
_FAMILY_MODULES = ("genserve._cli_serve", "genserve._cli_text", "genserve._cli_vae", "genserve._cli_style")
for _name in _FAMILY_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as _e:  # a family not built yet
        if _e.name != _name:
            raise
        continue
    _module.register(app=app, train_app=train_app, export_app=export_app, eval_app=eval_app,
                     plot_app=plot_app)


def main() -> None:
    # TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) is noise for a CLI user; errors stay.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app()

