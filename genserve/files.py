"""The one atomic write of the project: a temporary sibling, written whole, (optionally) fsync'd, then
renamed over the target, so a killed process leaves the old file or the new one, never half of one.

Every file genserve writes for a user (checkpoints, configs, exports' side files, images, batch
outputs, plots) goes through here. Temporary names are hidden, keep the target's suffix (Keras insists
on `.weights.h5` / `.keras`, Pillow and matplotlib pick the format from it) and are unique per process,
thread and call, so two writers never share one.

    python -c "from genserve.files import atomic_write; atomic_write('/tmp/x.txt', 'hi')"
"""

from __future__ import annotations

import itertools
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TMP_MARK = ".tmp-"  # every temporary sibling is named ".<stem>.tmp-<pid>-<thread>-<n><suffix>"
_counter = itertools.count()

_KNOWN_DOUBLE_SUFFIXES = (".weights.h5", ".tar.gz")


def _split_suffix(name: str) -> tuple[str, str]:
    for double in _KNOWN_DOUBLE_SUFFIXES:
        if name.endswith(double) and len(name) > len(double):
            return name[: -len(double)], double
    path = Path(name)
    return (path.stem, path.suffix) if path.suffix else (name, "")


def temp_sibling(path: str | os.PathLike) -> Path:
    """A hidden, unique temporary name beside `path` that keeps its suffix."""
    path = Path(path)
    stem, suffix = _split_suffix(path.name)
    unique = f"{os.getpid()}-{threading.get_ident()}-{next(_counter)}"
    return path.with_name(f".{stem}{TMP_MARK}{unique}{suffix}")


def is_temp_sibling(name: str) -> bool:
    """Whether a file name is one of `temp_sibling`'s (for clean-up of a killed writer's leftovers)."""
    return name.startswith(".") and TMP_MARK in name


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename is durable only once its folder is); no-op where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True, mkdir: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write to; on success it is renamed over `path`.

    For libraries that write to a path themselves (Pillow's `save`, matplotlib's `savefig`, Keras'
    `save_weights`). On an exception the temporary file is removed and `path` is left as it was.

    Args:
        path: the file to (re)place.
        fsync: flush the file's bytes to disk before the rename (the default: checkpoints, configs and
            results must survive a power cut; pass False for many small outputs that a caller syncs once).
        mkdir: create missing parent folders first.
    """
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        yield tmp
        if fsync and tmp.is_file():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, data: bytes | str, *, fsync: bool = True,
                 mkdir: bool = True, encoding: str = "utf-8") -> Path:
    """Write `data` (bytes, or text encoded with `encoding`) to `path` atomically; returns the path."""
    payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
    with atomic_path(path, fsync=False, mkdir=mkdir) as tmp:
        with open(tmp, "wb") as f:
            f.write(payload)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj, *, indent: int | None = 2, fsync: bool = True) -> Path:
    """`json.dumps(obj)` written atomically (a trailing newline, UTF-8)."""
    import json

    return atomic_write(path, json.dumps(obj, indent=indent) + "\n", fsync=fsync)


def read_file(path: str | os.PathLike, what: str) -> bytes:
    """The bytes of a small file a user named (a certificate, a config), or ValueError with one line.

    Args:
        what: how the message names the file, e.g. "--ca-cert" or "SSLConfig file".
    Raises:
        ValueError: `path` is a folder, missing or unreadable.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory, not a file")
    try:
        return path.read_bytes()
    except OSError as e:
        raise ValueError(f"{what}: cannot read {path}: {e.strerror or e}") from None


PEM_MARK = b"-----BEGIN "


def read_pem(value: bytes | str | os.PathLike | None, what: str) -> bytes | None:
    """PEM bytes from bytes (returned as given), PEM text, or the path of a PEM file; None stays None.

    Raises:
        ValueError: an unreadable file, or one without a '-----BEGIN ...' block (one line naming `what`).
    """
    if value is None or isinstance(value, bytes):
        return value
    text = os.fspath(value)
    if text.lstrip().startswith(PEM_MARK.decode()):
        return text.encode()
    data = read_file(text, what)
    if PEM_MARK not in data:
        raise ValueError(f"{what} {text} is not a PEM file (expected '-----BEGIN ...')")
    return data
