"""The `genserve` command line: thin commands that parse, build a config and call the library.

    genserve --help

`genserve.cli.root` holds the typer app; `options` every shared option and default; `remote` the one
helper that opens a client (with the --tls options) and turns its errors into one line; `common` the
checks run before a command's work; `quiet` TensorFlow's start-up noise hidden; one module per family
(`genserve.cli.text`, ...). Importing this package is cheap: the app is built on first use.
"""

from __future__ import annotations


def main() -> None:
    """Console entry point (`genserve`, `python -m genserve`)."""
    from genserve.cli.root import main as _main

    _main()


def __getattr__(name: str):
    if name == "app":  # `from genserve.cli import app` (tests, embedding)
        from genserve.cli.root import app

        return app
    raise AttributeError(f"module 'genserve.cli' has no attribute {name!r}")
