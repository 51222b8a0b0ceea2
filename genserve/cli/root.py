"""The `genserve` typer app: the shared sub-apps and every family's commands.

    genserve --help

Nothing heavy is imported at module level: `genserve --help` never imports TensorFlow. Each model
family registers its commands from its own module (`genserve/cli/<family>.py`, listed in
FAMILY_MODULES), which imports its shared options from `genserve.cli.common`, never from here: no
import cycle.
"""

from __future__ import annotations

import importlib
import os

import typer

from genserve.cli.common import TlsGroup

app = typer.Typer(
    name="genserve",
    help="Generative models (text LSTM, VAE, style transfer, DeepDream, DCGAN) served over TF Serving's "
         "gRPC and REST APIs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=TlsGroup,  # --tls / --ca-cert / --client-cert / --client-key on every --target command
)
train_app = typer.Typer(help="Train a model.", no_args_is_help=True)
export_app = typer.Typer(help="Export a trained model as a versioned SavedModel.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate a trained model.", no_args_is_help=True)
plot_app = typer.Typer(help="Figures.", no_args_is_help=True)


@app.callback()
def _global_options(
    verbose: bool = typer.Option(False, "--verbose", help="Show TensorFlow's start-up and warning logs "
                                 "(hidden by default so errors stay one line)."),
) -> None:
    if verbose:
        from genserve.cli.common import uninstall_quiet_tensorflow

        os.environ["GENSERVE_VERBOSE"] = "1"
        uninstall_quiet_tensorflow()


app.add_typer(train_app, name="train")
app.add_typer(export_app, name="export")
app.add_typer(eval_app, name="eval")
app.add_typer(plot_app, name="plot")


# Family modules register their commands here; each exposes register(app, train_app, export_app, ...).
FAMILY_MODULES = ("genserve.cli.serve", "genserve.cli.text", "genserve.cli.vae", "genserve.cli.style",
                  "genserve.cli.dream", "genserve.cli.gan", "genserve.cli.batch", "genserve.cli.playground")
for _name in FAMILY_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as _e:  # a family not built yet
        if _e.name != _name:
            raise
        continue
    _module.register(app=app, train_app=train_app, export_app=export_app, eval_app=eval_app,
                     plot_app=plot_app)


def main() -> None:
    # TensorFlow's start-up chatter (absl, oneDNN, CUDA probing, deprecation warnings) is noise for a
    # CLI user and breaks one-line errors: hidden unless --verbose (genserve.cli.common).
    from genserve.cli.common import install_quiet_tensorflow

    install_quiet_tensorflow()
    app()

