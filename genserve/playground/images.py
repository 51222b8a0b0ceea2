"""The Style and DeepDream tabs: pictures that improve step by step, shown as they do.

Endpoints (Gradio `api_name`):
    stylize  content + style picture, height, iterations -> (result, loss curve, wire line); the page
             shows the image after every L-BFGS iteration, with a progress bar
    dream    picture, width, octaves, steps, step size -> (result, one picture per octave, wire line);
             the page shows the image after every octave

Both run the same client code as `genserve stylize` / `genserve dream` (genserve.clients.style.stylize
over RemoteStyle: `targets` once, then one `step` per evaluation; genserve.clients.dream.dream over
RemoteDream: one `ascend` request per octave), in a thread whose callbacks feed the page.
"""

from __future__ import annotations

import numpy as np

from genserve.clients.dream import DreamSchedule, RemoteDream, dream
from genserve.clients.dream import load_image as load_dream_image
from genserve.clients.images import to_uint8
from genserve.clients.style import RemoteStyle, load_image, stylize
from genserve.playground import ui
from genserve.playground.ui import gr
from genserve.playground.wire import stream

STYLE_EVALS = 20  # L-BFGS-B evaluations per iteration (the book's maxfun)
STYLE_TIMEOUT = 120.0  # per request: a `step` on a large picture takes seconds on a CPU


def _picture(path, what: str) -> str:
    if not path:
        raise ValueError(f"give a {what} picture (upload one, or pick an example)")
    return str(path)


def run_stylize(ctx: ui.Context, model: str, content_path, style_path, height, iterations, evals=STYLE_EVALS):
    """Yield (image uint8 or None, loss rows, wire line, fraction done); the last is the final image."""
    height, iterations = int(height), int(iterations)
    content = load_image(_picture(content_path, "content"), height=height)  # (H, W, 3)
    style = load_image(_picture(style_path, "style"), size=(content.shape[1], content.shape[0]))
    with ctx.client(max(ctx.timeout, STYLE_TIMEOUT)) as client:
        remote = RemoteStyle(client, model)
        remote.compute_targets(content, style)

        history: list[float] = []

        def loss_and_grad(image):  # the served loss, also noting each evaluation for the curve
            loss, grad = remote(image)
            history.append(loss)
            return loss, grad

        def work(emit):
            return stylize(loss_and_grad, content, iterations=iterations, evals_per_iteration=int(evals),
                           callback=lambda i, image, loss: emit((i, image, list(history))))

        size = f"{content.shape[1]}x{content.shape[0]} px"
        for kind, payload in stream(work):
            if kind == "done":
                result = payload
                break
            i, image, losses = payload
            yield (to_uint8(image), losses, client.report(f"{size}, iteration {i}/{iterations}"),
                   i / iterations)
        ratio = result.losses[-1] / result.initial_loss if result.initial_loss else float("nan")
        yield (to_uint8(result.image), result.history,
               client.report(f"{size}, {result.evaluations} evaluations, loss x{ratio:.3g}"), 1.0)


def run_dream(ctx: ui.Context, model: str, path, width, octaves, steps, step_size, scale=1.4, max_loss=15.0):
    """Yield (image uint8, octave pictures, wire line, fraction done); the last is the final image."""
    image = load_dream_image(_picture(path, "input"), width=int(width))
    schedule = DreamSchedule(octaves=int(octaves), scale=float(scale), iterations=int(steps),
                             step=float(step_size), max_loss=float(max_loss))
    schedule.check()
    with ctx.client(max(ctx.timeout, STYLE_TIMEOUT)) as client:
        remote = RemoteDream(client, model)
        ascend = remote.ascend_fn()
        gallery: list[np.ndarray] = []

        def work(emit):
            def on_octave(octave, x, losses):  # every octave's picture reaches the page
                gallery.append(to_uint8(x))
                emit((octave, list(gallery)))

            return dream(ascend, image, schedule, callback=on_octave)

        for kind, payload in stream(work):
            if kind == "done":
                result = payload
                break
            octave, pictures = payload
            yield (pictures[-1], pictures, client.report(f"octave {octave}/{schedule.octaves}"),
                   octave / schedule.octaves)
        final = to_uint8(result.image)
        size = f"{final.shape[1]}x{final.shape[0]} px"
        yield final, list(gallery), client.report(f"{schedule.octaves} octaves, {size}"), 1.0


def _example_pairs(files: list[str]) -> list[list[str]]:
    """(content, style) pairs: each picture with the next one as its style."""
    return [[a, b] for a, b in zip(files, files[1:] + files[:1])] if len(files) > 1 else []


STYLE_INTRO = ("Neural style transfer: L-BFGS-B runs here, the served model returns loss and gradient "
               "(`targets` once, then one `step` request per evaluation).")


def build_style(ctx: ui.Context, names: list[str]) -> None:
    import pandas as pd

    with ui.tab_header(ctx, names, "style", STYLE_INTRO) as (guard, model):
        height = gr.Slider(32, 400, value=128, step=8, label="height (px)")
        iterations = gr.Slider(1, 20, value=5, step=1, label=f"iterations ({STYLE_EVALS} evaluations each)")
    with gr.Row():
        content = gr.Image(type="filepath", label="content", sources=["upload"], height=240)
        style = gr.Image(type="filepath", label="style", sources=["upload"], height=240)
    pairs = _example_pairs(ctx.example_files())
    if pairs:
        gr.Examples(pairs, [content, style], label="bundled examples (examples/images)")
    go = gr.Button("Stylize", variant="primary")
    with gr.Row():
        result = ui.image_output("result (updates every iteration)", height=320)
        curve = gr.LinePlot(pd.DataFrame({"evaluation": [], "loss": []}), x="evaluation", y="loss",
                            label="loss at every evaluation", height=320)
    wire = ui.wire_box("style")

    @guard
    def run(model_name, content_path, style_path, height_value, iterations_value, progress=gr.Progress()):
        for image, history, line, done in run_stylize(ctx, model_name, content_path, style_path, height_value,
                                                       iterations_value):
            progress(done, desc="L-BFGS-B")
            losses = pd.DataFrame({"evaluation": np.arange(1, len(history) + 1), "loss": history})
            yield image, losses, line

    go.click(run, [model, content, style, height, iterations], [result, curve, wire], api_name="stylize")


DREAM_INTRO = ("DeepDream with the book's octaves: one `ascend` request runs a whole octave on the server "
               "(larger pictures go as tiles through `gradient`).")


def build_dream(ctx: ui.Context, names: list[str]) -> None:
    with ui.tab_header(ctx, names, "dream", DREAM_INTRO) as (guard, model):
        width = gr.Slider(64, 800, value=256, step=8, label="width (px)")
        octaves = gr.Slider(1, 5, value=3, step=1, label="octaves")
        steps = gr.Slider(0, 60, value=20, step=1, label="steps per octave")
        step_size = gr.Slider(0.001, 0.05, value=0.01, step=0.001, label="step size")
    picture = gr.Image(type="filepath", label="picture", sources=["upload"], height=240)
    files = ctx.example_files()
    if files:
        gr.Examples([[f] for f in files], [picture], label="bundled examples (examples/images)")
    go = gr.Button("Dream", variant="primary")
    with gr.Row():
        result = ui.image_output("result (updates every octave)", height=320)
        octave_pictures = gr.Gallery(label="after each octave", columns=5, height=320, format="png")
    wire = ui.wire_box("dream")

    @guard
    def run(model_name, path, width_value, octaves_value, steps_value, step_value, progress=gr.Progress()):
        for image, gallery, line, done in run_dream(ctx, model_name, path, width_value, octaves_value,
                                                    steps_value, step_value):
            progress(done, desc="octaves")
            yield image, gallery, line

    go.click(run, [model, picture, width, octaves, steps, step_size], [result, octave_pictures, wire],
             api_name="dream")
