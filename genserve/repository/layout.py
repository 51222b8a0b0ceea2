"""The models directory's names: files and folders TF Serving reads, version folders, model names, and
the containment of every path (see the package docstring). Standard library only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

MODELS_CONFIG = "models.config"
DOCKER_PREFIX = "/models"  # where Dockerfile.serving puts the models directory
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
ASSETS_EXTRA = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
WARMUP_PATH = (ASSETS_EXTRA, WARMUP_FILE)
BATCHING_PARAMS_FILE = "batching_params.pbtxt"
MAX_WARMUP_RECORDS = 1000  # TF Serving reads at most this many warmup records
EXPORT_TMP_RE = re.compile(r"^\.tmp-(\d+)-(\d+)$")  # <name>/.tmp-<version>-<pid>: an export in progress
# Versions are int64 in TF Serving (ModelSpec.version is an Int64Value) and folder names are their
# canonical decimal spelling: "12", never "0012", "+12" or "١٢" (str.isdigit() accepts those).
VERSION_RE = re.compile(r"^(0|[1-9][0-9]{0,18})$")
MAX_VERSION = 2**63 - 1
# A name an export may create: letters, digits, '_', '.', '-', starting with a letter or digit.
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_NAME = 255


class RepositoryError(ValueError):
    """A name, path or version the models directory cannot give; `code` is the gRPC status a server
    answers for the same request (NOT_FOUND or INVALID_ARGUMENT)."""

    def __init__(self, message: str, code: str = "INVALID_ARGUMENT"):
        super().__init__(message)
        self.code = code


# -- names ----------------------------------------------------------------------------------------
def parse_version(name: str) -> int | None:
    """The version number a folder name spells, or None when it is not a canonical int64 decimal."""
    if not isinstance(name, str) or not VERSION_RE.match(name):
        return None
    value = int(name)
    return value if 0 < value <= MAX_VERSION else None


def export_temp_dir(model_dir: Path, version: int) -> Path:
    """The hidden folder an export of `version` is written into before its rename (EXPORT_TMP_RE)."""
    return Path(model_dir) / f".tmp-{version}-{os.getpid()}"


def check_plain_name(name) -> str:
    """A model name that can only mean one folder right under the models directory: not empty, no
    '/', '\\', '.', '..', absolute path or control character, at most 255 characters, not models.config.

    Raises:
        RepositoryError: INVALID_ARGUMENT, saying why.
    """
    if not isinstance(name, str) or not name:
        raise RepositoryError(f"model name {name!r} must be a non-empty string")
    if (name in (".", "..") or "/" in name or "\\" in name or len(name) > MAX_NAME
            or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name)):
        raise RepositoryError(f"model name {name!r} is not a plain model name (a folder right under "
                              "the models directory: no '/', '..', absolute path or control character)")
    if name.lower() == MODELS_CONFIG.lower():
        raise RepositoryError(f"model name {name!r} is the models directory's config file; "
                              "choose another name")
    return name


def check_model_name(name) -> str:
    """A name an export may create (MODEL_NAME_RE, at most 255 characters, not models.config).

    Raises:
        RepositoryError: saying why.
    """
    if not isinstance(name, str) or not MODEL_NAME_RE.fullmatch(name) or len(name) > MAX_NAME:
        raise RepositoryError(f"model name {name!r} must be letters, digits, '_', '.', '-' "
                              f"and start with a letter or digit (at most {MAX_NAME} characters)")
    return check_plain_name(name)


# -- containment ----------------------------------------------------------------------------------
def outside(path: Path, root: Path | None) -> str | None:
    """Why `path` (symlinks resolved) is not inside `root`, or None when it is (or `root` is None)."""
    if root is None:
        return None
    real, root = Path(path).resolve(), Path(root).resolve()
    if real == root or root in real.parents:
        return None
    return (f"{path} resolves to {real}, outside the models directory {root}; move it inside or "
            "allow external base paths (--allow-external-base-paths)")


def check_tree_contained(folder: Path, root: Path | None) -> None:
    """Every symlink under `folder` (a version about to load) must lead inside `root`.

    Raises:
        RepositoryError: naming the first symlink that leaves.
    """
    if root is None:
        return
    for parent, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(parent) / name
            if path.is_symlink():
                why = outside(path, root)
                if why:
                    raise RepositoryError(f"symlink {why}")


# -- versions -------------------------------------------------------------------------------------
def is_version_dir(path: Path) -> bool:
    """True for a version folder that holds a SavedModel: its name is a canonical int64 decimal
    (parse_version: "12", never "0012" or "²"; temporary `.tmp-*` folders never match)."""
    return parse_version(path.name) is not None and any((path / f).is_file() for f in SAVED_MODEL_FILES)


def scan_versions(model_dir: Path, root: Path | None = None) -> tuple[dict[int, Path], dict[int, str]]:
    """The complete versions under one model folder, and those refused for leaving `root`.

    Returns:
        ({version: resolved version folder}, {version: why refused}), ascending; both empty when the
        folder is missing or unreadable. With `root` None nothing is refused (external paths allowed).
    """
    model_dir = Path(model_dir)
    try:
        children = list(model_dir.iterdir()) if model_dir.is_dir() else []
    except OSError:
        return {}, {}
    found, refused = {}, {}
    for child in children:
        version = parse_version(child.name)
        if version is None or not child.is_dir() or not is_version_dir(child):
            continue
        why = outside(child, root)
        if why:
            refused[version] = f"version folder {why}"
        else:
            found[version] = child.resolve()
    return dict(sorted(found.items())), dict(sorted(refused.items()))


def list_versions(model_dir: Path, root: Path | None = None) -> list[int]:
    """The complete versions under one model folder, ascending ([] when the folder is missing)."""
    return list(scan_versions(model_dir, root)[0])


def next_free_version(model_dir: Path) -> int:
    """1 + the largest canonical version folder under `model_dir` (complete or not), or 1 for none.

    Raises:
        RepositoryError: the largest version is already MAX_VERSION (2**63-1).
    """
    model_dir = Path(model_dir)
    names = [p.name for p in model_dir.iterdir()] if model_dir.is_dir() else []
    latest = max((v for v in map(parse_version, names) if v is not None), default=0)
    if latest >= MAX_VERSION:
        raise RepositoryError(f"{model_dir} already holds version {latest}, the largest int64; "
                              "give an explicit free --version")
    return latest + 1


def scan_model_dirs(models_dir: Path) -> list[str]:
    """Names of the sub-folders of `models_dir` that hold at least one complete version."""
    return sorted(p.name for p in Path(models_dir).iterdir()
                  if p.is_dir() and not p.name.startswith(".") and list_versions(p))
