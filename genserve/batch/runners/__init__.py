"""The runners: how a chunk of items of one group becomes requests, files and records.

    runner(backend, items, out, max_rows) -> [record, ...]     (named by each kind's `runner`)

One module per kind family: `text` (text), `vae` (decode, grid), `gan` (gan_grid), `style` (stylize).
Each drives the family's own client (genserve.clients.*: TextModel, VAEModel, GANModel, the style
L-BFGS) through the job's Backend. This module holds what they share: `ChunkWork` (writes an item's
files and builds its ok/error record), `call_rows` (one request per `max_rows` rows) and PNG bytes.

A failure fails the items it touches (an `error` record), never the job. When the job is stopping
(a signal, or the server stayed unreachable) an item that was not finished gets no record at all: it
is left for the rerun, and what was finished is recorded.
"""

from __future__ import annotations

import importlib
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from genserve.batch.backend import JobStopped
from genserve.batch.plan import Chunk, max_rows_for
from genserve.files import atomic_write

_PLAIN = ("GenserveError", "ModelUnavailable", "ImageError", "UnknownCharactersError", "ValueError")


def _message(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if type(e).__name__ in _PLAIN else f"{type(e).__name__}: {text}"


class ChunkWork:
    """Record keeping for one runner call: writes an item's files and builds its ok/error record."""

    def __init__(self, backend, items, out: Path, max_rows: int):
        self.backend, self.items, self.out, self.max_rows = backend, list(items), Path(out), max_rows
        self.started_wall, self.started = time.time(), time.perf_counter()
        self.records: dict[str, dict] = {}
        self.rows = 0
        self.written = 0  # files written (synced to disk once, in result())

    def _base(self, item) -> dict:
        try:
            version = self.backend.version(item.model)
        except Exception:  # noqa: BLE001 - reported by the caller's error record
            version = None
        return {"id": item.id, "kind": item.kind, "line": item.line, "model": item.model,
                "version": version, "fingerprint": item.fingerprint,
                "timings": {"started": round(self.started_wall, 3),
                            "seconds": round(time.perf_counter() - self.started, 4),
                            "chunk_items": len(self.items), "chunk_rows": self.rows}}

    def ok(self, item, files: dict[str, bytes], **extra) -> None:
        """Write the item's files (temporary sibling + rename each; synced once per chunk) and record it."""
        for name, data in files.items():
            atomic_write(self.out / name, data, fsync=False, mkdir=False)
            self.written += 1
        self.records[item.id] = {**self._base(item), "status": "ok", "outputs": list(files), **extra}

    def fail(self, item, error: BaseException | str) -> None:
        """An error record, unless the job is stopping: then the item is left undone (no record)."""
        if isinstance(error, JobStopped) or self.backend.stop.is_set():
            return
        message = error if isinstance(error, str) else _message(error)
        self.records[item.id] = {**self._base(item), "status": "error", "outputs": [], "error": message}

    def pinned(self, model: str) -> bool:
        """Resolve the job's pinned version of `model` before any work; if that fails, every item of
        the chunk gets the error record and False comes back (the runner then returns result())."""
        try:
            self.backend.version(model)
        except Exception as e:  # noqa: BLE001 - recorded on every item
            self.fail_rest(self.items, e)
            return False
        return True

    def fail_rest(self, items, error) -> None:
        for item in items:
            if item.id not in self.records:
                self.fail(item, error)

    def result(self) -> list[dict]:
        """The records, once the chunk's files are on disk (one os.sync() for all of them).

        One sync per chunk instead of one fsync per file (2,000 fsyncs cost ~5 s here); the driver
        appends these records (fsync'd) only after this returns, so a record never reaches the disk
        before its files. Items left undone by a stopping job are absent.
        """
        self.fail_rest(self.items, "internal: the runner returned no record for this item")
        if self.written:
            os.sync()
        return [self.records[i.id] for i in self.items if i.id in self.records]


def runner(name: str):
    """The runner function named "module:function"."""
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


def run_chunk(backend, chunk: Chunk, out: Path, max_rows: int | None) -> list[dict]:
    """Run one chunk: requests, files, and one record per finished item (never raises for an item).

    A chunk picked up once the job is stopping runs nothing and returns no record.
    """
    if backend.stop.is_set():
        return []
    cap = min(max_rows_for(i, max_rows) for i in chunk.items)
    items = list(chunk.items)
    try:
        return runner(chunk.runner)(backend, items, out, cap)
    except Exception as e:  # noqa: BLE001 - a runner bug fails its chunk's items, not the job
        if isinstance(e, JobStopped) or backend.stop.is_set():
            return []
        return error_records(items, f"internal: {type(e).__name__}: {e}")


def error_records(items: list, message: str, version=None) -> list[dict]:
    return [{"id": i.id, "kind": i.kind, "line": i.line, "model": i.model, "version": version,
             "fingerprint": i.fingerprint, "status": "error", "outputs": [], "error": message,
             "timings": {"started": round(time.time(), 3), "seconds": 0.0}} for i in items]


def call_rows(fn: Callable[[dict], dict], inputs: dict, max_rows: int) -> dict[str, np.ndarray]:
    """`fn(inputs)` once per `max_rows` rows of `inputs` (split along dim 0), outputs concatenated."""
    n = len(next(iter(inputs.values())))
    parts = [fn({k: v[s:s + max_rows] for k, v in inputs.items()}) for s in range(0, n, max(1, max_rows))]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def grey_png(picture: np.ndarray, scale: int) -> bytes:
    """A grey picture in [0, 1] (H, W) as PNG bytes, enlarged `scale` times; zlib level 1 (3.6 ms
    instead of 10.6 ms for a 420x420 grid, files ~1.5x larger)."""
    from genserve.clients.images import encode, grey_to_uint8

    return encode(grey_to_uint8(picture, scale), compress_level=1)
