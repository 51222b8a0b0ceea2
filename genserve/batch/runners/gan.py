"""The GAN runner: gan_grid items of one model, the seeds of every grid in shared `sample` requests
(seed s names one digit; image k of a grid uses seed + k, as `genserve gan-grid`), through the GAN
client (genserve.clients.gan.GANModel) at the job's pinned version.
"""

from __future__ import annotations

import numpy as np

from genserve.batch.runners import ChunkWork, call_rows, grey_png


def run_gan(backend, items, out, max_rows: int = 256) -> list[dict]:
    """GAN grid items: all their seeds in max_rows-row `sample` requests, one tiled PNG per item."""
    from genserve.clients.gan import GANModel, grid_seeds, tile

    chunk = ChunkWork(backend, items, out, max_rows)
    try:
        gan = backend.family(GANModel, items[0].model)
    except Exception as e:  # noqa: BLE001
        chunk.fail_rest(items, e)
        return chunk.result()
    seeds = [grid_seeds(i.params["n"], i.params["seed"]) for i in items]  # each (n*n,) int64
    chunk.rows = sum(len(s) for s in seeds)
    try:
        images = call_rows(lambda x: {"images": gan.sample(x["seed"])}, {"seed": np.concatenate(seeds)},
                           max_rows)["images"]
    except Exception as e:  # noqa: BLE001
        chunk.fail_rest(items, e)
        return chunk.result()
    start = 0
    for item, s in zip(items, seeds):
        picture = tile(images[start:start + len(s)], item.params["n"])
        start += len(s)
        chunk.ok(item, {f"{item.id}.png": grey_png(picture, item.params["scale"])}, images=len(s))
    return chunk.result()
