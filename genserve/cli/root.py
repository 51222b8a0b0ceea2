"""The `genserve` typer app: the shared sub-apps and every family's commands.

    genserve --help

Nothing heavy is imported at module level: `genserve --help` never imports TensorFlow. Each model
family lists its commands in its own module (`genserve/cli/<family>.py`, named in FAMILY_MODULES) as
`COMMANDS = {"train vae": train_vae, "grid": grid, ...}` (or registers them with a
`register(app, train_app, ...)` function), and imports its shared options from `genserve.cli.options`,
never from here: no import cycle.
"""

from __future__ import annotations

import importlib
import os

import typer

from genserve.cli.remote import TlsGroup

app = typer.Typer(
    name="genserve",
    help="Generative models (text LSTM, VAE, style transfer, DeepDream, DCGAN) served over TF Serving's "
         "gRPC and REST APIs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: rich's table cut option names at 80 columns (--model-config-f…)
    cls=TlsGroup,  # --tls / --ca-cert / --client-cert / --client-key on every --target command
)
train_app = typer.Typer(help="Train a model.", no_args_is_help=True)
export_app = typer.Typer(help="Export a trained model as a versioned SavedModel.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate a trained model.", no_args_is_help=True)
plot_app = typer.Typer(help="Figures.", no_args_is_help=True)


@app.callback()
def _global_options(
    verbose: bool = typer.Option(False, "--verbose", help="Show TensorFlow's, gRPC's and Ray's start-up and "
                                 "warning logs (hidden by default so errors stay one line)."),
) -> None:
    if verbose:
        from genserve.cli.quiet import uninstall_quiet

        os.environ["GENSERVE_VERBOSE"] = "1"
        uninstall_quiet()


app.add_typer(train_app, name="train")
app.add_typer(export_app, name="export")
app.add_typer(eval_app, name="eval")
app.add_typer(plot_app, name="plot")


# Family modules list their commands (COMMANDS: "group name" or "name" -> function) or register them.
FAMILY_MODULES = ("genserve.cli.serve", "genserve.cli.text", "genserve.cli.vae", "genserve.cli.style",
                  "genserve.cli.dream", "genserve.cli.gan", "genserve.cli.batch",
                  "genserve.cli.deploy", "genserve.cli.rollout", "genserve.cli.playground")
GROUPS = {"": app, "train": train_app, "export": export_app, "eval": eval_app, "plot": plot_app}
for _name in FAMILY_MODULES:
    _module = importlib.import_module(_name)
    for _path, _function in getattr(_module, "COMMANDS", {}).items():
        _group, _, _command = _path.rpartition(" ")
        GROUPS[_group].command(_command)(_function)
    if hasattr(_module, "register"):
        _module.register(app=app, train_app=train_app, export_app=export_app, eval_app=eval_app,
                         plot_app=plot_app)


def main() -> None:
    # genserve.cli.main has hidden the start-up chatter (genserve.cli.quiet) before importing this module.
    app()

