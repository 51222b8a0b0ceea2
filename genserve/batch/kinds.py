"""The runners: how a chunk of items of one group becomes requests, files and records.

    runner(backend, items, out) -> [record, ...]     (named by each kind's `runner` in schema.py)

`run_text`: every stream of every item (temperatures x samples) is one row of ONE server-side
`generate` request per seed length (rows split at `max_rows`); each stream's PRNG seed comes from its
item's `seed` exactly as `genserve generate --server-side --seed S` draws it, so an item gives the same
text alone, batched, or from that command. Items with `top_k` sample on the client: one batched
`prime`, then one batched `step` per character, each item drawing from its own seeded Generator.
The image kinds' runners (decode, grid, gan_grid, stylize) are in genserve.batch.images. A failure
fails the items it touches (an `error` record), never the job.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from genserve import contract
from genserve.batch.catalog import text_temperatures
from genserve.batch.results import atomic_write


def _message(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if type(e).__name__ in ("GenserveError", "ModelUnavailable", "ImageError",
                                        "UnknownCharactersError", "ValueError") else f"{type(e).__name__}: {text}"


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
        for name, data in files.items():
            atomic_write(self.out / name, data)
            self.written += 1
        self.records[item.id] = {**self._base(item), "status": "ok", "outputs": list(files), **extra}

    def fail(self, item, error: BaseException | str) -> None:
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
        """The records, once the chunk's files are on disk (one os.sync() for all of them)."""
        self.fail_rest(self.items, "internal: the runner returned no record for this item")
        if self.written:
            os.sync()
        return [self.records[i.id] for i in self.items]


def call_rows(backend, model: str, signature: str, inputs: dict, max_rows: int,
              output_keys=None) -> dict[str, np.ndarray]:
    """One request per `max_rows` rows of `inputs` (split along dim 0), outputs concatenated."""
    n = len(next(iter(inputs.values())))
    parts = [backend.predict(model, signature, {k: v[s:s + max_rows] for k, v in inputs.items()},
                             output_keys) for s in range(0, n, max(1, max_rows))]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# ---------------------------------------------------------------------------------------------------
# Text.
# ---------------------------------------------------------------------------------------------------
class _TextVocab:
    """The served text model's vocabulary and window, from one `info` request (cached per backend)."""

    def __init__(self, backend, model: str):
        out = backend.predict(model, contract.TEXT_INFO.name, {"ids": np.zeros((1,), np.int32)})
        self.vocabulary = tuple(v.decode("utf-8") if isinstance(v, bytes) else str(v)
                                for v in out["vocabulary"][0])
        self.maxlen = int(out["maxlen"][0])
        self.lookup = {ch: i for i, ch in enumerate(self.vocabulary)}
        self._chars = np.array(self.vocabulary, dtype=object)  # id -> character, for fast decoding

    def encode(self, text: str, replace_unknown: str | None = None) -> np.ndarray:
        """text -> ids (T,) int32; raises UnknownCharactersError (a ValueError) like `genserve generate`."""
        from genserve.clients.text import UnknownCharactersError

        unknown = list(dict.fromkeys(ch for ch in text if ch not in self.lookup))
        if unknown:
            if replace_unknown is None:
                raise UnknownCharactersError(unknown)
            if replace_unknown not in self.lookup:
                raise ValueError(f"replace_unknown: {replace_unknown!r} is not in the vocabulary either")
            text = "".join(ch if ch in self.lookup else replace_unknown for ch in text)
        return np.array([self.lookup[ch] for ch in text], np.int32)

    def decode(self, ids) -> str:
        return "".join(self._chars[np.asarray(ids, np.int64).reshape(-1)].tolist())


def _text_model(backend, model: str) -> _TextVocab:
    key = ("text-vocab", model)
    if key not in backend.cache:
        backend.cache[key] = _TextVocab(backend, model)
    return backend.cache[key]


def _stream_files(item, temps, samples, texts) -> tuple[dict[str, bytes], list[dict]]:
    files, streams = {}, []
    for j, (t, chars) in enumerate(zip(np.repeat(temps, samples), texts)):
        name = f"{item.id}.txt" if len(texts) == 1 else f"{item.id}-t{t:g}-s{j % samples}.txt"
        files[name] = chars.encode("utf-8")
        streams.append({"temperature": float(t), "sample": j % samples, "path": name})
    return files, streams


def run_text(backend, items, out, max_rows: int = 512) -> list[dict]:
    """Text items of one group (model, sampling mode, length)."""
    from genserve.clients.text import sample_next

    chunk = ChunkWork(backend, items, out, max_rows)
    model, length = items[0].model, items[0].params["length"]
    try:
        backend.version(model)
        text_model = _text_model(backend, model)
    except Exception as e:  # noqa: BLE001
        chunk.fail_rest(items, e)
        return chunk.result()
    by_len: dict[int, list] = {}  # seed length T -> [(item, ids (T,), stream temperatures (S,))]
    for item in items:
        p = item.params
        try:
            ids = text_model.encode(p["seed_text"], p["replace_unknown"])[-text_model.maxlen:]
        except ValueError as e:
            chunk.fail(item, e)
            continue
        temps = np.repeat(np.asarray(text_temperatures(p), np.float64), p["samples"])  # (S,)
        by_len.setdefault(len(ids), []).append((item, ids, temps))
    for t_len, group in by_len.items():
        ids = np.concatenate([np.tile(g[1][None, :], (len(g[2]), 1)) for g in group])  # (B, T)
        temps = np.concatenate([g[2] for g in group])  # (B,)
        chunk.rows = len(temps)
        try:
            if items[0].params["top_k"] is None:
                seeds = np.concatenate([np.random.default_rng(g[0].params["seed"]).integers(
                    0, np.iinfo(np.int64).max, size=len(g[2]), dtype=np.int64) for g in group])
                generated = call_rows(backend, model, contract.TEXT_GENERATE.name, {
                    "ids": ids.astype(np.int32), "temperature": temps.astype(np.float32),
                    "length": np.full(len(temps), length, np.int32), "seed": seeds}, max_rows)["ids"]
            else:  # client-side: each item samples from its own Generator, as `genserve generate`
                rngs = [np.random.default_rng(g[0].params["seed"]) for g in group]
                bounds = np.cumsum([0] + [len(g[2]) for g in group])
                state_keys = ("logits", "h", "c")
                state = call_rows(backend, model, contract.TEXT_PRIME.name, {"ids": ids.astype(np.int32)},
                                  max_rows, state_keys)
                generated = np.zeros((len(temps), length), np.int32)
                for i in range(length):
                    for k, g in enumerate(group):
                        rows = slice(bounds[k], bounds[k + 1])
                        generated[rows, i] = sample_next(state["logits"][rows], g[2], rngs[k],
                                                         g[0].params["top_k"])
                    if i + 1 < length:
                        state = call_rows(backend, model, contract.TEXT_STEP.name,
                                          {"ids": generated[:, i], "h": state["h"], "c": state["c"]},
                                          max_rows, state_keys)
        except Exception as e:  # noqa: BLE001 - the server refused or failed: these items fail
            chunk.fail_rest([g[0] for g in group], e)
            continue
        start = 0
        for item, seed_ids, item_temps in group:
            rows = generated[start:start + len(item_temps)]
            start += len(item_temps)
            texts = [text_model.decode(r) for r in rows]
            files, streams = _stream_files(item, item_temps[::item.params["samples"]],
                                           item.params["samples"], texts)
            chunk.ok(item, files, streams=streams, seed_used=text_model.decode(seed_ids),
                     chars=length * len(texts))
    return chunk.result()
