"""The style runner: stylize items sharing a style image (and height) share `targets` requests (one row
each); each item then runs the style client's L-BFGS-B (genserve.clients.style.stylize) over `step`,
all at the job's pinned version.
"""

from __future__ import annotations

import numpy as np

from genserve import contract
from genserve.batch.runners import ChunkWork, call_rows


def run_style(backend, items, out, max_rows: int = 8) -> list[dict]:
    """Stylize items of one (model, style image, height) group."""
    from genserve.clients.images import encode_rgb
    from genserve.clients.style import load_image, stylize

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
            targets = call_rows(lambda x: backend.predict(model, contract.STYLE_TARGETS.name, x), {
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
                                      {"image": image[None].astype(np.float32), **mine}, ("loss", "gradient"))
                return float(got["loss"][0]), got["gradient"][0]

            try:
                result = stylize(loss_and_grad, content, item.params["iterations"],
                                 item.params["evals_per_iteration"])
            except Exception as e:  # noqa: BLE001
                chunk.fail(item, e)
                continue
            chunk.ok(item, {f"{item.id}.png": encode_rgb(result.image)},
                     initial_loss=result.initial_loss, final_loss=result.losses[-1],
                     evaluations=result.evaluations)
    return chunk.result()
