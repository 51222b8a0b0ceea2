"""The models directory in one place: its layout, models.config, version policy and labels, and the
containment of every path in it. The export writer, the server and the batch in-process backend all
read and write it through here, so they pick the same version and refuse the same bad inputs.

    <models_dir>/models.config                               text-format ModelServerConfig
    <models_dir>/<name>/<version>/saved_model.pb              one SavedModel per integer version
    <models_dir>/<name>/<version>/variables/                  its checkpoint
    <models_dir>/<name>/<version>/assets.extra/tf_serving_warmup_requests   PredictionLog TFRecords
    <models_dir>/<name>/<version>/batching_params.pbtxt       per-model BatchingParameters
    <models_dir>/<name>/.tmp-<version>-<pid>/                 an export being written (never served)

TF Serving reads the same names: warmup from `assets.extra/tf_serving_warmup_requests`
(servables/tensorflow/saved_model_warmup_util.cc), batching from `batching_params.pbtxt` with
--enable_per_model_batching_parameters (bundle_factory_util.cc), the versions and their policy as
sources/storage_path/file_system_storage_path_source.cc does. `base_path` in models.config is written
for the Docker image (prefix `/models`, see Dockerfile.serving) and mapped back onto the models
directory: `/models/toy` -> `<models_dir>/toy`; a relative base path is relative to the models directory.

Containment: every model folder, version folder and symlink inside them is resolved and must stay
inside the models directory unless the operator allows external base paths; a model or version that
leaves it is refused with a message saying where it leads (one bad model never hides the others).

No TensorFlow import and no TF Serving protos (models.config's message is genserve.wire's copy), so
`genserve models` and argument checks stay fast and work in a `genserve[client]` install. The rooms:
`layout.py` (names, version folders, containment), `config.py` (models.config parse/render/edit), this
module (which models and versions a server serves).

    python -m genserve.repository models/
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from genserve.repository.config import (  # noqa: F401 (public names of the package)
    LATEST_ONE,
    TF_PLATFORM,
    ConfigError,
    ModelEntry,
    parse_models_config,
    read_models_config,
    render_models_config,
    set_version_labels,
    set_version_policy,
    write_models_config,
)
from genserve.repository.layout import (  # noqa: F401 (public names of the package)
    ASSETS_EXTRA,
    BATCHING_PARAMS_FILE,
    DOCKER_PREFIX,
    EXPORT_TMP_RE,
    MAX_NAME,
    MAX_VERSION,
    MAX_WARMUP_RECORDS,
    MODEL_NAME_RE,
    MODELS_CONFIG,
    SAVED_MODEL_FILES,
    VERSION_RE,
    WARMUP_FILE,
    WARMUP_PATH,
    RepositoryError,
    check_model_name,
    check_plain_name,
    check_tree_contained,
    export_temp_dir,
    is_version_dir,
    list_versions,
    next_free_version,
    outside,
    parse_version,
    scan_model_dirs,
    scan_versions,
)


# -- models ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Located:
    """One configured model: its entry, its local folder, and why it is refused (None: it is not)."""

    entry: ModelEntry
    local: Path
    error: str | None = None


def resolve_base_path(base_path: str, models_dir: Path, prefix: str = DOCKER_PREFIX,
                      allow_external: bool = False) -> Path:
    """Where a config's base_path lives on this machine (see the module docstring).

    Raises:
        ConfigError: the path (symlinks resolved) leads outside `models_dir` and `allow_external` is
            False (a models.config could otherwise make the server load any SavedModel on the machine).
    """
    models_dir = Path(models_dir)
    prefix = prefix.rstrip("/")
    if prefix and (base_path == prefix or base_path.startswith(prefix + "/")):
        path = models_dir / base_path[len(prefix):].lstrip("/")
    else:
        path = Path(base_path)
        path = path if path.is_absolute() else models_dir / path
    why = None if allow_external else outside(path, models_dir)
    if why:
        raise ConfigError(f"base_path {base_path!r}: {why}")
    return path


def default_entries(models_dir: Path, prefix: str = DOCKER_PREFIX) -> list[ModelEntry]:
    """The entries of a models directory without models.config: every folder with a version."""
    prefix = prefix.rstrip("/")
    return [ModelEntry(name, f"{prefix}/{name}" if prefix else name) for name in scan_model_dirs(models_dir)]


def locate(entries, models_dir: Path, prefix: str = DOCKER_PREFIX,
           allow_external: bool = False) -> dict[str, Located]:
    """name -> Located for config entries; a base path outside the models directory is a per-model
    error (Located.error), never an exception, so one bad model never blocks the others."""
    located = {}
    for entry in entries:
        try:
            located[entry.name] = Located(entry, resolve_base_path(entry.base_path, models_dir, prefix,
                                                                   allow_external))
        except ConfigError as e:
            located[entry.name] = Located(entry, Path(models_dir) / entry.name, str(e))
    return located


def locate_models(models_dir: Path, prefix: str = DOCKER_PREFIX,
                  allow_external: bool = False) -> dict[str, Located]:
    """Every model of a models directory: from models.config when present, else every folder with a
    version; models leaving the directory carry their error.

    Raises:
        FileNotFoundError: `models_dir` is not a directory.
        ConfigError: models.config is malformed.
    """
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise FileNotFoundError(f"models directory {models_dir} does not exist"
                                + (" (it is a file)" if models_dir.exists() else ""))
    entries = read_models_config(models_dir)
    if entries is None:
        entries = default_entries(models_dir, prefix)
    return locate(entries, models_dir, prefix, allow_external)


def discover(models_dir: Path, prefix: str = DOCKER_PREFIX,
             allow_external: bool = False) -> dict[str, tuple[ModelEntry, Path]]:
    """name -> (entry, local model folder) for every model that stays inside the models directory
    (see locate_models for the refused ones and the errors raised)."""
    return {name: (m.entry, m.local)
            for name, m in locate_models(models_dir, prefix, allow_external).items() if m.error is None}


def model_path(models_dir: Path, name: str, *, prefix: str = DOCKER_PREFIX,
               allow_external: bool = False) -> Path:
    """The local folder of model `name` (models.config's base_path, else `<models_dir>/<name>`).

    Raises:
        RepositoryError: INVALID_ARGUMENT for a name that is not a plain model name or a model folder
            outside the models directory; NOT_FOUND for a model the directory does not serve.
        ConfigError: models.config is malformed. FileNotFoundError: no models directory.
    """
    return _find(models_dir, name, prefix, allow_external).local


def _find(models_dir, name, prefix, allow_external) -> Located:
    check_plain_name(name)
    models = locate_models(models_dir, prefix, allow_external)
    found = models.get(name)
    if found is None:
        raise RepositoryError(f"no model named {name!r} in {models_dir} (served: "
                              f"{', '.join(sorted(models)) or 'none'})", "NOT_FOUND")
    if found.error:
        raise RepositoryError(f"model {name!r}: {found.error}")
    return found


def served_versions(models_dir: Path, name: str, *, prefix: str = DOCKER_PREFIX,
                    allow_external: bool = False) -> list[int]:
    """The versions of `name` a server over `models_dir` serves: its policy applied to the complete,
    contained version folders on disk (ascending). Raises as model_path."""
    found = _find(models_dir, name, prefix, allow_external)
    root = None if allow_external else Path(models_dir)
    return found.entry.served_versions(list_versions(found.local, root))


def resolve_version(models_dir: Path, name: str, version: int | None = None, label: str | None = None,
                    *, prefix: str = DOCKER_PREFIX, allow_external: bool = False) -> int:
    """The version a request for (name, version or label, or neither: the latest) gets from a server
    over `models_dir` (the registry's rule, without a server).

    Raises:
        RepositoryError: code NOT_FOUND for an unknown model or a version not served,
            INVALID_ARGUMENT for an unknown label or both a version and a label; the message names the
            served versions. Raises as model_path otherwise.
    """
    found = _find(models_dir, name, prefix, allow_external)
    root = None if allow_external else Path(models_dir)
    served = found.entry.served_versions(list_versions(found.local, root))
    shown = ", ".join(map(str, served)) or "none"
    if version is not None and label is not None:
        raise RepositoryError(f"model {name!r}: give a version or a label, not both")
    if label is not None:
        version = found.entry.version_labels.get(label)
        if version is None or version not in served:
            labels = ", ".join(f"{k}={v}" for k, v in sorted(found.entry.version_labels.items())) or "none"
            raise RepositoryError(f"model {name!r}: unrecognized version label {label!r} (labels: "
                                  f"{labels}; served versions: {shown})")
        return version
    if version is None:
        if not served:
            raise RepositoryError(f"model {name!r} has no version to serve (served versions: none)",
                                  "NOT_FOUND")
        return served[-1]
    if version not in served:
        raise RepositoryError(f"model {name!r} has no served version {version} (served versions: "
                              f"{shown})", "NOT_FOUND")
    return version


def describe_models_dir(models_dir: Path, prefix: str = DOCKER_PREFIX) -> str:
    """One line per model: name, versions on disk, served versions, labels and local folder."""
    lines = []
    for name, found in locate_models(models_dir, prefix).items():
        if found.error:
            lines.append(f"{name}\trefused: {found.error}")
            continue
        versions, refused = scan_versions(found.local, models_dir)
        entry = found.entry
        labels = ", ".join(f"{k}={v}" for k, v in sorted(entry.version_labels.items()))
        shown = ",".join(map(str, versions)) if versions else "(none yet)"
        served = ",".join(map(str, entry.served_versions(list(versions)))) or "none"
        lines.append(f"{name}\tversions {shown}\tserved {served} ({entry.describe_policy()})"
                     + (f"\tlabels {labels}" if labels else "")
                     + (f"\trefused {','.join(map(str, sorted(refused)))}" if refused else "")
                     + f"\t{found.local}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(describe_models_dir(Path(sys.argv[1] if len(sys.argv) > 1 else os.getcwd())))
