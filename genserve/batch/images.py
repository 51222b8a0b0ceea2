"""The image runners: VAE decode/grid, GAN grids and style transfer (see genserve.batch.kinds).

`run_vae`: the latent points of every decode and grid item go out as ONE `decode` request.
`run_gan`: the seeds of every GAN grid go out as ONE `sample` request.
`run_style`: items sharing a style image (and size) share `targets` requests; each item then runs its
own L-BFGS-B over `step`.
"""

from __future__ import annotations

import numpy as np

from genserve import contract
from genserve.batch.kinds import ChunkWork, call_rows
from genserve.batch.results import png_bytes


# ---------------------------------------------------------------------------------------------------
# VAE: decode and grid.
# ---------------------------------------------------------------------------------------------------
def _grey_png(picture: np.ndarray, scale: int) -> bytes:
    pixels = np.clip(np.rint(np.asarray(picture, np.float32) * 255), 0, 255).astype(np.uint8)  # (H, W)
    if scale > 1:
        pixels = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)
    return png_bytes(pixels, compress_level=1)


def run_vae(backend, items, out, max_rows: int = 256) -> list[dict]:
    """Decode and grid items of one VAE: all their latent points in one `decode` request."""
    from genserve.clients.vae import grid_points, tile

    chunk = ChunkWork(backend, items, out, max_rows)
    model = items[0].model
    try:
        shape = backend.input_shape(model, contract.VAE_DECODE.name, "z")
        if shape is None or len(shape) != 2 or shape[1] is None:
            raise ValueError(f"model {model!r} does not fix the latent size (z has shape {shape})")
        latent = int(shape[1])
    except Exception as e:  # noqa: BLE001
        chunk.fail_rest(items, e)
        return chunk.result()
    planned = []  # (item, z (P, latent))
    for item in items:
        p = item.params
        try:
            if item.kind == "grid":
                z = grid_points(p["n"], latent, p["range"][0], p["range"][1], p["spacing"])
            else:
                z = np.asarray(p["points"], np.float32)
                if z.shape[1] != latent:
                    raise ValueError(f"points: model {model!r} has a {latent}-d latent space, "
                                     f"got points of size {z.shape[1]}")
        except ValueError as e:
            chunk.fail(item, e)
            continue
        planned.append((item, z))
    if not planned:
        return chunk.result()
    chunk.rows = sum(len(z) for _, z in planned)
    try:
        images = call_rows(backend, model, contract.VAE_DECODE.name,
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
        chunk.ok(item, {f"{item.id}.png": _grey_png(picture, item.params["scale"])}, images=len(z))
    return chunk.result()


# ---------------------------------------------------------------------------------------------------
# Style transfer.
# ---------------------------------------------------------------------------------------------------
def run_style(backend, items, out, max_rows: int = 8) -> list[dict]:
    """Stylize items sharing a style image and height: shared `targets` requests, L-BFGS-B per item."""
    from genserve.clients.style import load_image, stylize, to_uint8

    chunk = ChunkWork(backend, items, out, max_rows)
    model = items[0].model
    if not chunk.pinned(model):
        return chunk.result()
    by_size: dict[tuple, list] = {}
    for item in items:
        p = item.params
        try:
            content = load_image(p["content"], height=p["height"])  # (H, W, 3)
            style = load_image(p["style"], size=(content.shape[1], content.shape[0]))
        except ValueError as e:
            chunk.fail(item, e)
            continue
        by_size.setdefault(content.shape, []).append((item, content, style))
    for group in by_size.values():
        chunk.rows = len(group)
        try:
            targets = call_rows(backend, model, contract.STYLE_TARGETS.name, {
                "content_image": np.stack([g[1] for g in group]),
                "style_image": np.stack([g[2] for g in group])}, max_rows)
        except Exception as e:  # noqa: BLE001
            chunk.fail_rest([g[0] for g in group], e)
            continue
        keys = [k for k in targets if k == contract.STYLE_CONTENT_FEATURES
                or k.startswith(contract.STYLE_GRAM_PREFIX)]
        for row, (item, content, _) in enumerate(group):
            mine = {k: targets[k][row:row + 1] for k in keys}

            def loss_and_grad(image, mine=mine):
                got = backend.predict(model, contract.STYLE_STEP.name,
                                      {"image": image[None].astype(np.float32), **mine},
                                      ("loss", "gradient"))
                return float(got["loss"][0]), got["gradient"][0]

            try:
                result = stylize(loss_and_grad, content, item.params["iterations"],
                                 item.params["evals_per_iteration"])
            except Exception as e:  # noqa: BLE001
                chunk.fail(item, e)
                continue
            chunk.ok(item, {f"{item.id}.png": png_bytes(to_uint8(result.image))},
                     initial_loss=result.initial_loss, final_loss=result.losses[-1],
                     evaluations=result.evaluations)
    return chunk.result()


# ---------------------------------------------------------------------------------------------------
# GAN grids.
# ---------------------------------------------------------------------------------------------------
def run_gan(backend, items, out, max_rows: int = 256) -> list[dict]:
    """GAN grid items: the seeds of every grid in one `sample` request (seed s names one digit)."""
    from genserve.clients.gan import grid_seeds, tile

    chunk = ChunkWork(backend, items, out, max_rows)
    model = items[0].model
    if not chunk.pinned(model):
        return chunk.result()
    seeds = [grid_seeds(i.params["n"], i.params["seed"]) for i in items]  # each (n*n,) int64
    chunk.rows = sum(len(s) for s in seeds)
    try:
        images = call_rows(backend, model, contract.GAN_SAMPLE.name, {"seed": np.concatenate(seeds)}, max_rows,
                           ("images",))["images"]
    except Exception as e:  # noqa: BLE001
        chunk.fail_rest(items, e)
        return chunk.result()
    start = 0
    for item, s in zip(items, seeds):
        picture = tile(images[start:start + len(s)], item.params["n"])
        start += len(s)
        chunk.ok(item, {f"{item.id}.png": _grey_png(picture, item.params["scale"])}, images=len(s))
    return chunk.result()
