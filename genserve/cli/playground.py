"""`genserve playground`: a web page to play with every served model (Gradio, the `playground` extra).

    genserve playground --target 127.0.0.1:8500                 # open http://127.0.0.1:7860
    genserve playground --target models.example.org:8500 --tls --ca-cert certs/ca.pem --models text,vae

The page talks to the server with the thin clients only, so any TF-Serving-compatible endpoint works:
TF Serving itself, `genserve serve`, or a fleet behind one address. Gradio is imported inside the
command: `genserve --help` stays light.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from genserve.cli.common import fail
from genserve.cli.options import DEFAULT_TARGET, TargetOpt, TimeoutOpt
from genserve.cli.remote import current_tls


class Digits(str, Enum):
    """Test digits drawn as dots on the VAE's latent plane (encoded by the served model)."""

    mnist = "mnist"
    fashion = "fashion"
    synthetic = "synthetic"
    none = "none"


def register(app, **_) -> None:
    """Add `playground` to the `genserve` app."""
    app.command("playground")(playground)


def _model_names(models: str | None) -> list[str] | None:
    if models is None:
        return None
    names = [name.strip() for name in models.split(",") if name.strip()]
    if not names:
        raise fail("--models needs at least one model name (e.g. --models text,vae)")
    return names


def playground(
    target: TargetOpt = DEFAULT_TARGET,
    host: Annotated[str, typer.Option(help="Interface the page listens on; 127.0.0.1 keeps it on this "
                                      "machine (0.0.0.0: every interface, no authentication!).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the page.")] = 7860,
    models: Annotated[Optional[str], typer.Option(help="Comma-separated served model names to show "
                                                  "(default: each family's default name: text, vae, gan, "
                                                  "style, dream); the family is read from the signatures.")] = None,
    digits: Annotated[Digits, typer.Option(help="Test digits encoded and drawn on the VAE plane when the model "
                                           "has `encode` (mnist: offline from a pinned wheel).")] = Digits.mnist,
    timeout: TimeoutOpt = 30.0,
) -> None:
    """Serve a web page with one tab per model family the server holds (text, VAE, GAN, style, dream)."""
    names = _model_names(models)
    if not host.strip():
        raise fail("--host must not be empty (127.0.0.1 for this machine only)")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise fail("the playground needs Gradio: pip install 'genserve[playground]'") from None
    from genserve.clients import GenserveError
    from genserve.playground import serve_playground

    test_digits = None
    if digits != Digits.none:
        from genserve.data import DataError, mnist

        try:
            loaded = mnist.load(digits.value)
            test_digits = (loaded.x_test, loaded.y_test)
        except DataError as e:
            typer.echo(f"warning: no test digits on the VAE plane ({e})", err=True)
    try:
        app, url, served = serve_playground(target, names, host=host, port=port, timeout=timeout,
                                            client_options={"tls": current_tls()}, digits=test_digits,
                                            block=False)
    except GenserveError as e:
        raise fail(f"{target}: {e.code.name}: {e.details}") from None
    except LookupError as e:
        raise fail(str(e)) from None
    except OSError as e:
        raise fail(f"cannot serve the page on {host}:{port}: {e}") from None
    typer.echo(served.describe())
    typer.echo(f"playground on {url} (Ctrl-C to stop)")
    try:
        app.block_thread()
    finally:
        app.close()
