"""The VAE runner: decode and grid items of one model, all their latent points in shared `decode`
requests (up to `max_rows` points each), through the VAE client (genserve.clients.vae.VAEModel) at
the job's pinned version; grids are the client's `grid_points` and `tile`.
"""

from __future__ import annotations

import numpy as np

from genserve.batch.runners import ChunkWork, call_rows, grey_png


def run_vae(backend, items, out, max_rows: int = 256) -> list[dict]:
    """Decode and grid items of one VAE: their latent points concatenated, decoded in max_rows slices."""
    from genserve.clients.vae import VAEModel, grid_points, tile

    chunk = ChunkWork(backend, items, out, max_rows)
    try:
        vae = backend.family(VAEModel, items[0].model)
        latent = vae.latent_dim
    except Exception as e:  # noqa: BLE001
        chunk.fail_rest(items, e)
        return chunk.result()
    planned = []  # (item, z (P, latent))
    for item in items:
        p = item.params
        if item.kind == "grid":
            z = grid_points(p["n"], latent, p["range"][0], p["range"][1], p["spacing"])
        else:
            z = np.asarray(p["points"], np.float32)
            if z.shape[1] != latent:
                chunk.fail(item, f"points: model {vae.model!r} has a {latent}-d latent space, "
                                 f"got points of size {z.shape[1]}")
                continue
        planned.append((item, z))
    if not planned:
        return chunk.result()
    chunk.rows = sum(len(z) for _, z in planned)
    try:
        images = call_rows(lambda x: {"images": vae.decode(x["z"])},
                           {"z": np.concatenate([z for _, z in planned])}, max_rows)["images"]
    except Exception as e:  # noqa: BLE001
        chunk.fail_rest([item for item, _ in planned], e)
        return chunk.result()
    start = 0
    for item, z in planned:
        part = images[start:start + len(z)]  # (P, 28, 28, 1)
        start += len(z)
        if item.kind == "grid":
            picture = tile(part, item.params["n"])
        else:
            picture = np.concatenate(list(part[..., 0]), axis=1)  # (28, 28 P): a strip
        chunk.ok(item, {f"{item.id}.png": grey_png(picture, item.params["scale"])}, images=len(z))
    return chunk.result()
