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

from genserve.layout import (  # noqa: F401 (re-exported)
    DOCKER_PREFIX,
    MODELS_CONFIG,
    SAVED_MODEL_FILES,
    parse_version,
)

TF_PLATFORM = "tensorflow"


class ConfigError(ValueError):
    """models.config cannot be read or names something impossible."""


# TF Serving's model_version_policy (file_system_storage_path_source.proto): which versions on disk are
# served. ("latest", n): the n largest (TF Serving's default, n = 1); ("all",); ("specific", (v, ...)).
LATEST_ONE = ("latest", 1)


@dataclass(frozen=True)
class ModelEntry:
    """One served model: its name, where its versions live, its version labels and version policy."""

    name: str
    base_path: str  # as written in models.config (may be a Docker path)
    version_labels: dict[str, int] = field(default_factory=dict)
    version_policy: tuple = LATEST_ONE

    def served_versions(self, on_disk: list[int]) -> list[int]:
        """The versions this entry's policy serves among `on_disk` (ascending)."""
        kind = self.version_policy[0]
        if kind == "all":
            return sorted(on_disk)
        if kind == "specific":
            return sorted(set(on_disk) & set(self.version_policy[1]))
        return sorted(on_disk)[-self.version_policy[1]:] if on_disk else []

    def describe_policy(self) -> str:
        kind = self.version_policy[0]
        if kind == "latest":
            return f"latest {self.version_policy[1]}"
        return "all" if kind == "all" else f"specific {list(self.version_policy[1])}"


def is_version_dir(path: Path) -> bool:
    """True for a version folder that holds a SavedModel: its name is a canonical int64 decimal
    (layout.parse_version: "12", never "0012" or "²"; temporary `.tmp-*` folders never match)."""
    return parse_version(path.name) is not None and any((path / f).is_file() for f in SAVED_MODEL_FILES)


def list_versions(model_dir: Path) -> list[int]:
    """The complete versions under one model folder, ascending; [] when the folder is missing."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    try:
        children = list(model_dir.iterdir())
    except OSError:
        return []
    return sorted(parse_version(p.name) for p in children if p.is_dir() and is_version_dir(p))


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
        entries.append(ModelEntry(cfg.name, cfg.base_path or cfg.name, dict(cfg.version_labels),
                                  _parse_policy(cfg, source)))
    return entries


def _parse_policy(cfg, source: str) -> tuple:
    policy = cfg.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind is None:
        return LATEST_ONE
    if kind == "latest":
        n = policy.latest.num_versions or 1
        return ("latest", n)
    if kind == "all":
        return ("all",)
    versions = tuple(sorted(set(policy.specific.versions)))
    if not versions or any(v <= 0 for v in versions):
        raise ConfigError(f"{source}: model {cfg.name!r}: model_version_policy specific needs positive versions")
    return ("specific", versions)


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
        kind = entry.version_policy[0]
        if kind == "all":
            cfg.model_version_policy.all.SetInParent()
        elif kind == "specific":
            cfg.model_version_policy.specific.versions.extend(entry.version_policy[1])
        elif entry.version_policy != LATEST_ONE:
            cfg.model_version_policy.latest.num_versions = entry.version_policy[1]
    return text_format.MessageToString(config)


def resolve_base_path(base_path: str, models_dir: Path, prefix: str = DOCKER_PREFIX,
                      allow_external: bool = False) -> Path:
    """Where a config's base_path lives on this machine (see the module docstring).

    Raises:
        ConfigError: the path leads outside `models_dir` and `allow_external` is False (a models.config
            could otherwise make the server load any SavedModel on the machine).
    """
    models_dir = Path(models_dir)
    prefix = prefix.rstrip("/")
    if prefix and (base_path == prefix or base_path.startswith(prefix + "/")):
        path = models_dir / base_path[len(prefix):].lstrip("/")
    else:
        path = Path(base_path)
        path = path if path.is_absolute() else models_dir / path
    if not allow_external:
        root = models_dir.resolve()
        real = path.resolve()
        if real != root and root not in real.parents:
            raise ConfigError(f"base_path {base_path!r} resolves to {real}, outside the models directory "
                              f"{root}; move the model inside it or allow external base paths "
                              "(--allow-external-base-paths)")
    return path


def scan_model_dirs(models_dir: Path) -> list[str]:
    """Names of the sub-folders of `models_dir` that hold at least one complete version."""
    models_dir = Path(models_dir)
    return sorted(p.name for p in models_dir.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and list_versions(p))



def discover(models_dir: Path, prefix: str = DOCKER_PREFIX,
             allow_external: bool = False) -> dict[str, tuple[ModelEntry, Path]]:
    """Every model to serve: from models.config when present, else every folder with a version.

    Returns:
        name -> (entry, resolved local model folder).
    Raises:
        FileNotFoundError: `models_dir` is not a directory.
        ConfigError: models.config is malformed or a base_path leaves the models directory.
    """
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise FileNotFoundError(f"models directory {models_dir} does not exist"
                                + (" (it is a file)" if models_dir.exists() else ""))
    entries = read_models_config(models_dir)
    if entries is None:
        entries = [ModelEntry(name, f"{prefix.rstrip('/')}/{name}") for name in scan_model_dirs(models_dir)]
    return resolve_entries(entries, models_dir, prefix, allow_external)


def resolve_entries(entries, models_dir: Path, prefix: str = DOCKER_PREFIX,
                    allow_external: bool = False) -> dict[str, tuple[ModelEntry, Path]]:
    """name -> (entry, local folder) for config entries (ConfigError for a base path outside)."""
    return {e.name: (e, resolve_base_path(e.base_path, models_dir, prefix, allow_external))
            for e in entries}


def describe_models_dir(models_dir: Path, prefix: str = DOCKER_PREFIX) -> str:
    """One line per model: name, versions on disk, labels and local folder."""
    lines = []
    for name, (entry, local) in discover(models_dir, prefix).items():
        versions = list_versions(local)
        labels = ", ".join(f"{k}={v}" for k, v in sorted(entry.version_labels.items()))
        shown = ",".join(map(str, versions)) if versions else "(none yet)"
        served = ",".join(map(str, entry.served_versions(versions))) or "none"
        lines.append(f"{name}\tversions {shown}\tserved {served} ({entry.describe_policy()})"
                     + (f"\tlabels {labels}" if labels else "") + f"\t{local}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(describe_models_dir(Path(sys.argv[1] if len(sys.argv) > 1 else os.getcwd())))
