"""The `genserve` command line: thin commands that parse, build a config and call the library.

    genserve --help

`genserve.cli.root` holds the typer app; `options` every shared option and default; `remote` the one
helper that opens a client (with the --tls options) and turns its errors into one line; `common` the
checks run before a command's work; `quiet` TensorFlow's, gRPC's and Ray's start-up noise hidden; one module per family
(`genserve.cli.text`, ...). Importing this package is cheap: the app is built on first use.
"""

from __future__ import annotations


# Top-level module -> the pyproject extra that installs it: a command whose extra is missing says which
# one to install, in one line (exit 1), instead of a traceback.
EXTRAS = {"typer": "client", "click": "client", "PIL": "client", "scipy": "client", "matplotlib": "client",
          "tensorflow": "tf", "keras": "tf", "tensorflow_serving": "tf", "aiohttp": "tf",
          "prometheus_client": "tf", "grpc_health": "tf", "yaml": "tf", "ray": "batch",
          "gradio": "playground", "gradio_client": "playground"}


def missing_extra(error: ModuleNotFoundError) -> str | None:
    """The one-line advice for a ModuleNotFoundError of a package an extra installs, else None."""
    extra = EXTRAS.get((error.name or "").partition(".")[0])
    if extra is None:
        return None
    return (f"error: this command needs the '{extra}' extra ({error.name} is not installed): "
            f"pip install 'genserve[{extra}]'")


def main() -> None:
    """Console entry point (`genserve`, `python -m genserve`)."""
    import sys

    # TensorFlow's, gRPC's and Ray's start-up and optimiser chatter is noise for a CLI user and breaks
    # one-line errors: hidden unless --verbose, before any command module is imported (genserve.cli.quiet).
    from genserve.cli.quiet import install_quiet, verbose_requested

    if not verbose_requested(sys.argv[1:]):
        install_quiet()
    try:
        from genserve.cli.root import main as _main

        _main()
    except ModuleNotFoundError as e:
        advice = missing_extra(e)
        if advice is None:
            raise
        print(advice, file=sys.stderr)
        raise SystemExit(1) from None


def __getattr__(name: str):
    if name == "app":  # `from genserve.cli import app` (tests, embedding)
        from genserve.cli.root import app

        return app
    raise AttributeError(f"module 'genserve.cli' has no attribute {name!r}")
