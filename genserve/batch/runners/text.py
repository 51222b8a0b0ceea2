"""The text runner: a chunk of text items of one group (model, sampling mode, length).

Server-side items: every stream of every item (temperatures x samples) is one row of ONE `generate`
request per seed length (split at `max_rows`); each stream's PRNG seed comes from its item's `seed`
exactly as `genserve generate --server-side --seed S` draws it, so an item gives the same text alone,
batched, or from that command. Items with `top_k` sample on the client: one batched `prime`, then one
batched `step` per character, each item drawing from its own seeded Generator with the text client's
`sample_next` (the same text as `genserve generate --top-k K --seed S`). Vocabulary, encoding and
decoding are the text client's (`genserve.clients.text.TextModel`), at the job's pinned version.
"""

from __future__ import annotations

import numpy as np

from genserve.batch.kinds import text_streams
from genserve.batch.runners import ChunkWork, call_rows


def _server_side(model, group, ids, temps, length, max_rows) -> np.ndarray:
    """(B, length) generated ids: one `generate` request per max_rows rows."""
    seeds = np.concatenate([np.random.default_rng(item.params["seed"]).integers(
        0, np.iinfo(np.int64).max, size=len(t), dtype=np.int64) for item, _, t in group])  # (B,)
    return call_rows(lambda x: {"ids": model.generate(x["ids"], x["temperature"], length, x["seed"])},
                     {"ids": ids, "temperature": temps, "seed": seeds}, max_rows)["ids"]


def _client_side(model, group, ids, temps, length, max_rows) -> np.ndarray:
    """(B, length) generated ids: batched prime, then one batched step per character; each item's rows
    drawn from its own Generator seeded with the item's seed (as `genserve generate --top-k`)."""
    from genserve.clients.text import sample_next

    def prime(x):
        logits, (h, c) = model.prime(x["ids"])
        return {"logits": logits, "h": h, "c": c}

    def step(x):
        logits, (h, c) = model.step(x["ids"], (x["h"], x["c"]))
        return {"logits": logits, "h": h, "c": c}

    rngs = [np.random.default_rng(item.params["seed"]) for item, _, _ in group]
    bounds = np.cumsum([0] + [len(t) for _, _, t in group])
    state = call_rows(prime, {"ids": ids}, max_rows)
    generated = np.zeros((len(temps), length), np.int32)
    for i in range(length):
        for k, (item, _, t) in enumerate(group):
            rows = slice(bounds[k], bounds[k + 1])
            generated[rows, i] = sample_next(state["logits"][rows], t, rngs[k], item.params["top_k"])
        if i + 1 < length:
            state = call_rows(step, {"ids": generated[:, i], "h": state["h"], "c": state["c"]}, max_rows)
    return generated


def run_text(backend, items, out, max_rows: int = 512) -> list[dict]:
    """Text items of one group (model, sampling mode, length)."""
    from genserve.clients.text import TextModel

    chunk = ChunkWork(backend, items, out, max_rows)
    model_name, length = items[0].model, items[0].params["length"]
    try:
        model = backend.family(TextModel, model_name)
        maxlen = model.info.maxlen
    except Exception as e:  # noqa: BLE001
        chunk.fail_rest(items, e)
        return chunk.result()
    by_len: dict[int, list] = {}  # seed length T -> [(item, ids (T,), stream temperatures (S,))]
    for item in items:
        p = item.params
        try:
            ids = model.encode(p["seed_text"], p["replace_unknown"])[-maxlen:]
        except ValueError as e:
            chunk.fail(item, e)
            continue
        temps = np.asarray([t for t, _, _ in text_streams(item.id, p)], np.float64)  # (S,)
        by_len.setdefault(len(ids), []).append((item, ids, temps))
    sample = _client_side if items[0].params["top_k"] is not None else _server_side
    for group in by_len.values():
        ids = np.concatenate([np.tile(seed[None, :], (len(t), 1)) for _, seed, t in group])  # (B, T)
        temps = np.concatenate([t for _, _, t in group])  # (B,)
        chunk.rows = len(temps)
        try:
            generated = sample(model, group, ids, temps, length, max_rows)  # (B, length)
        except Exception as e:  # noqa: BLE001 - the server refused or failed: these items fail
            chunk.fail_rest([item for item, _, _ in group], e)
            continue
        chars = np.array(model.info.vocabulary, dtype=object)  # id -> character: one gather per row
        start = 0
        for item, seed_ids, t in group:
            streams = text_streams(item.id, item.params)
            texts = ["".join(chars[row]) for row in generated[start:start + len(t)]]
            start += len(t)
            files = {name: text.encode("utf-8") for (_, _, name), text in zip(streams, texts)}
            chunk.ok(item, files, seed_used=model.decode(seed_ids), chars=length * len(texts),
                     streams=[{"temperature": float(temp), "sample": k, "path": name}
                              for temp, k, name in streams])
    return chunk.result()
