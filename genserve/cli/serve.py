"""CLI commands for serving: `genserve serve`, `genserve models`, `genserve export toy`.

    genserve export toy --models-dir out/models && genserve serve --models-dir out/models --port 8500

TensorFlow is imported inside the command functions only (`genserve --help` never imports it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genserve.cli.common import fail


ModelsDir = Annotated[Path, typer.Option("--models-dir", help="Models directory (<name>/<version>/ and "
                                         "models.config), as written by `genserve export`.")]


def serve(
    models_dir: ModelsDir = Path("models"),
    port: Annotated[int, typer.Option(help="gRPC port (0 = any free port).", min=0, max=65535)] = 8500,
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 opens it to the network.")]
    = "127.0.0.1",
    poll_seconds: Annotated[float, typer.Option(help="Seconds between polls for new versions "
                                                "(like TF Serving's --file_system_poll_wait_seconds); "
                                                "0 = never.", min=0)] = 2.0,
    max_message_mb: Annotated[int, typer.Option(help="gRPC message size limit, MiB.", min=1)] = 64,
) -> None:
    """Serve every model in a models directory over TF Serving's gRPC API (Predict, metadata, status)."""
    from genserve.serving.config import ConfigError, discover, list_versions

    try:
        found = discover(models_dir)
    except (FileNotFoundError, ConfigError) as e:
        raise fail(str(e))
    if not any(list_versions(local) for _, local in found.values()):
        raise fail(f"no model versions under {models_dir} (expected <name>/<version>/saved_model.pb); "
                   "export one first, e.g. `genserve export toy --models-dir "
                   f"{models_dir}`")

    import logging
    import signal
    import threading

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from genserve.serving.server import ModelServer

    server = ModelServer(models_dir, host=host, port=port, poll_seconds=poll_seconds,
                         max_message_bytes=max_message_mb * 1024 * 1024)
    try:
        bound = server.start()
    except (OSError, ConfigError, FileNotFoundError) as e:
        raise fail(str(e))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    models = ", ".join(f"{n} v{max(v)}" for n, v in server.loaded_versions().items() if v)
    typer.echo(f"serving {models} on {host}:{bound} (gRPC; Ctrl-C to stop)", err=False)
    while not stop.wait(0.5):
        pass
    server.stop(grace=2.0)
    typer.echo("stopped")


def models(models_dir: ModelsDir = Path("models")) -> None:
    """List the models, versions and version labels in a models directory."""
    from genserve.serving.config import ConfigError, describe_models_dir

    try:
        text = describe_models_dir(models_dir)
    except (FileNotFoundError, ConfigError) as e:
        raise fail(str(e))
    if not text:
        raise fail(f"no models under {models_dir}")
    typer.echo(text)


def export_toy(
    models_dir: ModelsDir = Path("models"),
    weight: Annotated[float, typer.Option(help="w in y = w*x + b.")] = 2.0,
    bias: Annotated[float, typer.Option(help="b in y = w*x + b.")] = 1.0,
    version: Annotated[int | None, typer.Option(help="Version number (default: the next one).",
                                                min=1)] = None,
) -> None:
    """Export the toy model y = w*x + b (signatures "affine" and "scale") as a new version."""
    from genserve.export.toy import ToyConfig, export_toy as _export
    from genserve.export.writer import ExportError

    try:
        path = _export(models_dir, ToyConfig(weight=weight, bias=bias), version=version)
    except ExportError as e:
        raise fail(str(e))
    typer.echo(str(path))


def register(app: typer.Typer, export_app: typer.Typer, **_) -> None:
    """Add `serve`, `models` and `export toy` to the genserve CLI."""
    app.command("serve")(serve)
    app.command("models")(models)
    export_app.command("toy")(export_toy)
