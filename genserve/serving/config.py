"""The models directory and its `models.config`: what TF Serving reads, and what `genserve serve` reads.

Layout (TF Serving's): `<models_dir>/<name>/<integer version>/saved_model.pb`, plus
`<models_dir>/models.config`, a text-format `tensorflow.serving.ModelServerConfig`:

    model_config_list {
      config { name: "toy" base_path: "/models/toy" model_platform: "tensorflow" }
    }

`base_path` is written for the Docker image (prefix `/models`, see Dockerfile.serving). The embedded
server resolves it against the directory it was given: `/models/toy` -> `<models_dir>/toy`; a relative
base path is relative to the models directory; any other absolute path is used as is.

This module imports no TensorFlow (only the protobuf-only `tensorflow_serving.config` package), so
`genserve models` and the argument checks of `genserve serve` stay fast.

    python -m genserve.serving.config models/
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from genserve.layout import DOCKER_PREFIX, MODELS_CONFIG, SAVED_MODEL_FILES  # noqa: F401 (re-exported)

TF_PLATFORM = "tensorflow"


class ConfigError(ValueError):
    """models.config cannot be read or names something impossible."""


@dataclass(frozen=True)
class ModelEntry:
    """One served model: its name, where its versions live, and its version labels."""

    name: str
    base_path: str  # as written in models.config (may be a Docker path)
    version_labels: dict[str, int] = field(default_factory=dict)


def is_version_dir(path: Path) -> bool:
    """True for `<digits>/` folders that hold a SavedModel (temporary `.tmp-*` folders never match)."""
    return path.name.isdigit() and any((path / f).is_file() for f in SAVED_MODEL_FILES)


def list_versions(model_dir: Path) -> list[int]:
    """The complete versions under one model folder, ascending; [] when the folder is missing."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and is_version_dir(p))


def parse_models_config(text: str, source: str = MODELS_CONFIG) -> list[ModelEntry]:
    """Parse the text of a ModelServerConfig into entries.

    Raises:
        ConfigError: the text is not a ModelServerConfig, uses custom_model_config, or repeats a name.
    """
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise ConfigError(f"{source}: not a text-format ModelServerConfig ({e})") from None
    if config.WhichOneof("config") == "custom_model_config":
        raise ConfigError(f"{source}: custom_model_config is not supported; use model_config_list")
    entries: list[ModelEntry] = []
    for cfg in config.model_config_list.config:
        if not cfg.name:
            raise ConfigError(f"{source}: a config entry has no name")
        if cfg.model_platform and cfg.model_platform != TF_PLATFORM:
            raise ConfigError(f"{source}: model {cfg.name!r} has platform {cfg.model_platform!r}; "
                              f"only {TF_PLATFORM!r} is served")
        if any(e.name == cfg.name for e in entries):
            raise ConfigError(f"{source}: model {cfg.name!r} is listed twice")
        entries.append(ModelEntry(cfg.name, cfg.base_path or cfg.name, dict(cfg.version_labels)))
    return entries


def read_models_config(models_dir: Path) -> list[ModelEntry] | None:
    """The entries of `<models_dir>/models.config`, or None when there is no such file.

    Raises:
        ConfigError: the file exists but cannot be parsed.
    """
    path = Path(models_dir) / MODELS_CONFIG
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return parse_models_config(text, source=str(path))


def render_models_config(entries: list[ModelEntry]) -> str:
    """Text-format ModelServerConfig for `entries`, as TF Serving's --model_config_file reads it."""
    config = model_server_config_pb2.ModelServerConfig()
    for entry in entries:
        cfg = config.model_config_list.config.add()
        cfg.name = entry.name
        cfg.base_path = entry.base_path
        cfg.model_platform = TF_PLATFORM
        for label, version in sorted(entry.version_labels.items()):
            cfg.version_labels[label] = version
    return text_format.MessageToString(config)


def resolve_base_path(base_path: str, models_dir: Path, prefix: str = DOCKER_PREFIX) -> Path:
    """Where a config's base_path lives on this machine (see the module docstring)."""
    models_dir = Path(models_dir)
    prefix = prefix.rstrip("/")
    if prefix and (base_path == prefix or base_path.startswith(prefix + "/")):
        return models_dir / base_path[len(prefix):].lstrip("/")
    path = Path(base_path)
    return path if path.is_absolute() else models_dir / path


def scan_model_dirs(models_dir: Path) -> list[str]:
    """Names of the sub-folders of `models_dir` that hold at least one complete version."""
    models_dir = Path(models_dir)
    return sorted(p.name for p in models_dir.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and list_versions(p))


def discover(models_dir: Path, prefix: str = DOCKER_PREFIX) -> dict[str, tuple[ModelEntry, Path]]:
    """Every model to serve: from models.config when present, else every folder with a version.

    Returns:
        name -> (entry, resolved local model folder).
    Raises:
        FileNotFoundError: `models_dir` is not a directory.
        ConfigError: models.config is malformed.
    """
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise FileNotFoundError(f"models directory {models_dir} does not exist")
    entries = read_models_config(models_dir)
    if entries is None:
        entries = [ModelEntry(name, f"{prefix.rstrip('/')}/{name}") for name in scan_model_dirs(models_dir)]
    return {e.name: (e, resolve_base_path(e.base_path, models_dir, prefix)) for e in entries}


def describe_models_dir(models_dir: Path, prefix: str = DOCKER_PREFIX) -> str:
    """One line per model: name, versions on disk, labels and local folder."""
    lines = []
    for name, (entry, local) in discover(models_dir, prefix).items():
        versions = list_versions(local)
        labels = ", ".join(f"{k}={v}" for k, v in sorted(entry.version_labels.items()))
        shown = ",".join(map(str, versions)) if versions else "(none yet)"
        lines.append(f"{name}\tversions {shown}" + (f"\tlabels {labels}" if labels else "")
                     + f"\t{local}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(describe_models_dir(Path(sys.argv[1] if len(sys.argv) > 1 else os.getcwd())))
