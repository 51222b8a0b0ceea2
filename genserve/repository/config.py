"""`models.config`: parse, render and edit the text-format `tensorflow.serving.ModelServerConfig` that
TF Serving's --model_config_file reads (and `genserve serve` with it):

    model_config_list {
      config { name: "toy" base_path: "/models/toy" model_platform: "tensorflow" }
    }

The message is genserve's own copy of TF Serving's (genserve.wire.protos.model_server_config_pb2,
checked field by field against tensorflow_serving's), so neither TensorFlow nor TF Serving's protos are
needed: a `genserve[client]` install lists and edits a models directory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from genserve.files import atomic_write
from genserve.textproto import parse_text_proto
from genserve.repository.layout import (
    DOCKER_PREFIX,
    MODELS_CONFIG,
    RepositoryError,
    list_versions,
    scan_model_dirs,
)

TF_PLATFORM = "tensorflow"
# TF Serving's model_version_policy (file_system_storage_path_source.proto): which versions on disk are
# served. ("latest", n): the n largest (TF Serving's default, n = 1); ("all",); ("specific", (v, ...)).
LATEST_ONE = ("latest", 1)


class ConfigError(RepositoryError):
    """models.config cannot be read, names something impossible, or an edit of it cannot be made."""


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


def parse_models_config(text: str, source: str = MODELS_CONFIG) -> list[ModelEntry]:
    """Parse the text of a ModelServerConfig into entries.

    Raises:
        ConfigError: the text is not a ModelServerConfig, uses custom_model_config, or repeats a name.
    """
    from genserve.wire.protos import model_server_config_pb2

    config = parse_text_proto(text, model_server_config_pb2.ModelServerConfig(), source, ConfigError)
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
        return ("latest", policy.latest.num_versions or 1)
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
    from google.protobuf import text_format

    from genserve.wire.protos import model_server_config_pb2

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


# -- edits ----------------------------------------------------------------------------------------
def write_models_config(models_dir, base_path_prefix: str = DOCKER_PREFIX) -> Path:
    """(Re)write `<models_dir>/models.config` (atomically) for every model folder in `models_dir`.

    Entries already in the file (their base_path, labels and policy) are kept; model folders not yet
    listed are added with base_path `<prefix>/<name>`.

    Returns:
        The path of models.config.
    Raises:
        ConfigError: an existing models.config cannot be parsed (it is left untouched).
    """
    models_dir = Path(models_dir)
    entries = list(read_models_config(models_dir) or [])
    listed = {e.name for e in entries}
    prefix = base_path_prefix.rstrip("/")
    for name in scan_model_dirs(models_dir):
        if name not in listed:
            entries.append(ModelEntry(name, f"{prefix}/{name}" if prefix else name))
    return atomic_write(models_dir / MODELS_CONFIG, render_models_config(entries))


def _edit(models_dir, name: str, change) -> Path:
    """Apply `change(entry) -> entry` to model `name` in models.config (listing new folders first)."""
    models_dir = Path(models_dir)
    write_models_config(models_dir)
    entries = read_models_config(models_dir) or []
    if name not in {e.name for e in entries}:
        raise ConfigError(f"model {name!r} is not in {models_dir / MODELS_CONFIG}")
    entries = [change(e) if e.name == name else e for e in entries]
    return atomic_write(models_dir / MODELS_CONFIG, render_models_config(entries))


def set_version_labels(models_dir, name: str, labels: dict[str, int | None]) -> Path:
    """Set (or, with value None, remove) version labels of model `name` in models.config.

    Raises:
        ConfigError: the model is not in models.config, or a label names a version not on disk.
    """
    models_dir = Path(models_dir)

    def change(entry: ModelEntry) -> ModelEntry:
        on_disk = set(list_versions(models_dir / name))
        merged = dict(entry.version_labels)
        for label, version in labels.items():
            if version is None:
                merged.pop(label, None)
            elif version not in on_disk:
                raise ConfigError(f"label {label!r}: model {name!r} has no version {version} "
                                  f"(on disk: {sorted(on_disk)})")
            else:
                merged[label] = version
        return dataclasses.replace(entry, version_labels=merged)

    return _edit(models_dir, name, change)


def set_version_policy(models_dir, name: str, policy: tuple) -> Path:
    """Set model `name`'s model_version_policy in models.config: ("latest", n), ("all",) or
    ("specific", (v, ...)). TF Serving serves only the latest version unless told otherwise.

    Raises:
        ConfigError: the model is not in models.config or the policy is malformed.
    """
    ok = (tuple(policy) == ("all",) or (len(policy) == 2 and policy[0] == "latest" and int(policy[1]) >= 1)
          or (len(policy) == 2 and policy[0] == "specific" and policy[1]
              and all(int(v) >= 1 for v in policy[1])))
    if not ok:
        raise ConfigError(f"bad version policy {policy!r}: use ('latest', n), ('all',) or ('specific', (v, ...))")
    if policy[0] == "specific":
        policy = ("specific", tuple(sorted(set(int(v) for v in policy[1]))))
    return _edit(models_dir, name, lambda e: dataclasses.replace(e, version_policy=tuple(policy)))
