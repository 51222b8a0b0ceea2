"""The VAE and GAN tabs: latent spaces as pictures.

Endpoints (Gradio `api_name`):
    grid             VAE: the n x n latent plane in ONE `decode` request (+ ONE `encode` of the test
                     digits, drawn as dots, where the model has `encode`) -> (picture, wire line)
    decode           VAE: a latent point (z0, z1) -> (the decoded digit, large; wire line)
    gan_grid         GAN: n x n digits from seeds seed .. seed + n*n - 1 in ONE `sample` request
    gan_interpolate  GAN: the slerp strip between two seeds (`sample` for both z, then `generate`)

Clicking the plane picture asks `decode` for the point under the pointer: `plane_point` inverts the
book's grid layout (genserve.clients.vae.grid_axis: cell centres at the normal quantiles of
linspace(0.05, 0.95, n); row 0 = largest z1), so the centre of a cell decodes to that cell's digit.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from genserve import contract as C
from genserve.clients.gan import GANModel
from genserve.clients.vae import IMAGE_SIDE, VAEModel, encode_all
from genserve.playground import ui
from genserve.playground.ui import gr

LOW, HIGH = 0.05, 0.95  # the book's quantile range (the VAE client's defaults)
EDGE = 1e-4  # clicks beyond the outer cells' centres keep extrapolating, up to these quantiles
# matplotlib's tab10, the colours of the CLI's scatter plot (genserve encode)
TAB10 = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
         (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
SCATTER_DIGITS = 1000


def _quantile(fraction: np.ndarray, n: int) -> np.ndarray:
    cell = np.asarray(fraction, np.float64) * n - 0.5  # continuous cell index, 0 = first centre
    p = LOW + cell * (HIGH - LOW) / max(n - 1, 1)
    return np.clip(p, EDGE, 1 - EDGE)


def plane_point(x: float, y: float, n: int) -> tuple[float, float]:
    """The latent point (z0, z1) under pixel fractions (x, y) in [0, 1] of an n x n grid picture."""
    normal = NormalDist()
    z0 = normal.inv_cdf(float(_quantile(np.array(x), n)))
    z1 = normal.inv_cdf(float(_quantile(np.array(1.0 - y), n)))  # row 0 (top) = largest z1
    return z0, z1


def plane_fractions(z: np.ndarray, n: int) -> np.ndarray:
    """Inverse of plane_point for many points: z (N, >=2) -> pixel fractions (N, 2) as (x, y)."""
    cdf = np.vectorize(NormalDist().cdf)
    p = cdf(np.asarray(z, np.float64)[:, :2])  # (N, 2)
    cell = (p - LOW) / (HIGH - LOW) * max(n - 1, 1)
    frac = (cell + 0.5) / n
    return np.stack([frac[:, 0], 1.0 - frac[:, 1]], axis=1)


def draw_dots(picture: np.ndarray, fractions: np.ndarray, labels: np.ndarray, radius: int = 2) -> np.ndarray:
    """Colour dots (tab10 by label) on an RGB uint8 picture at pixel fractions; points outside skipped."""
    out = picture.copy()
    h, w = out.shape[:2]
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disc = (yy ** 2 + xx ** 2) <= radius ** 2
    for (fx, fy), label in zip(fractions, labels):
        cx, cy = int(fx * w), int(fy * h)
        if not (0 <= cx < w and 0 <= cy < h):
            continue
        ys, xs = cy + yy[disc], cx + xx[disc]
        keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        out[ys[keep], xs[keep]] = TAB10[int(label) % 10]
    return out


def vae_grid(ctx: ui.Context, model: str, n) -> tuple[np.ndarray, str]:
    n = int(n)
    with ctx.client() as client:
        vae = VAEModel(client, model)
        picture = ui.grey_picture(vae.grid(n), ui.fit_scale(n * IMAGE_SIDE))  # (S, S, 3)
        note = f"{n}x{n} grid in one decode request"
        if ctx.digits is not None and C.VAE_ENCODE.name in vae.pinned().signatures:
            images, labels = ctx.digits
            images, labels = images[:SCATTER_DIGITS], labels[:SCATTER_DIGITS]
            z_mean, _ = encode_all(vae.encode, images, batch_size=len(images))  # ONE encode request
            picture = draw_dots(picture, plane_fractions(z_mean, n), labels)
            note += f"; {len(images)} test digits encoded in one request (dots, coloured by label)"
        return picture, client.report(note)


def vae_decode(ctx: ui.Context, model: str, z0, z1) -> tuple[np.ndarray, str]:
    with ctx.client() as client:
        vae = VAEModel(client, model)
        z = np.zeros((1, vae.latent_dim), np.float32)
        z[0, 0] = float(z0)
        if vae.latent_dim > 1:
            z[0, 1] = float(z1)
        image = vae.decode(z)[0, ..., 0]  # (28, 28)
        return ui.grey_picture(image, 10), client.report(f"z = ({float(z0):.3f}, {float(z1):.3f})")


def gan_grid(ctx: ui.Context, model: str, seed, n) -> tuple[np.ndarray, str]:
    n, seed = int(n), int(seed)
    with ctx.client() as client:
        picture = GANModel(client, model).grid(n, seed)
        return (ui.grey_picture(picture, ui.fit_scale(n * IMAGE_SIDE)),
                client.report(f"seeds {seed}..{seed + n * n - 1} in one sample request"))


def gan_interpolate(ctx: ui.Context, model: str, seed_a, seed_b, steps, spherical) -> tuple[np.ndarray, str]:
    steps = int(steps)
    with ctx.client() as client:
        strip = GANModel(client, model).interpolate(int(seed_a), int(seed_b), steps, bool(spherical))
        path = "slerp" if spherical else "straight line"
        return ui.grey_picture(strip, 4), client.report(f"{steps} steps on the {path}")


VAE_INTRO = ("The latent plane, decoded in one request (the book's grid: normal quantiles 5 %..95 %). "
             "**Click anywhere** on it to decode that point.")


def build_vae(ctx: ui.Context, names: list[str]) -> None:
    with ui.tab_header(ctx, names, "vae", VAE_INTRO) as (guard, model):
        n = gr.Slider(2, 30, value=15, step=1, label="grid size n (n x n digits)", scale=3)
        draw = gr.Button("Draw the plane", variant="primary", elem_id="vae-draw")
    with gr.Row():
        plane = ui.image_output("latent plane (click to decode)", elem_id="vae-plane", scale=3)
        with gr.Column(scale=2):
            digit = ui.image_output("decoded digit", elem_id="vae-digit")
            z0 = gr.Number(0.0, label="z[0]")
            z1 = gr.Number(0.0, label="z[1]")
            decode_button = gr.Button("Decode this point")
    wire = ui.wire_box("vae")
    drawn_n = gr.State(None)  # the n of the plane on show (the slider may have moved since)

    @guard
    def grid(model_name, n_value):
        return vae_grid(ctx, model_name, n_value)

    @guard
    def decode(model_name, z0_value, z1_value):
        return vae_decode(ctx, model_name, z0_value, z1_value)

    def clicked(picture, n_value, evt: gr.SelectData):
        if picture is None or n_value is None or evt.index is None:
            raise gr.Error("draw the plane first")
        h, w = np.asarray(picture).shape[:2]
        x, y = evt.index
        return plane_point((x + 0.5) / w, (y + 0.5) / h, int(n_value))

    draw.click(grid, [model, n], [plane, wire], api_name="grid").success(
        lambda n_value: n_value, n, drawn_n, api_name="grid_drawn", api_visibility="private")
    plane.select(clicked, [plane, drawn_n], [z0, z1], api_name="plane_click", api_visibility="private").success(
        decode, [model, z0, z1], [digit, wire], api_name="plane_decode", api_visibility="private")
    decode_button.click(decode, [model, z0, z1], [digit, wire], api_name="decode")


GAN_INTRO = "Digits drawn on the server by seed: the same seed names the same digit on every load."


def build_gan(ctx: ui.Context, names: list[str]) -> None:
    with ui.tab_header(ctx, names, "gan", GAN_INTRO) as (guard, model):
        seed = gr.Number(0, label="first seed", precision=0, elem_id="gan-seed")
        n = gr.Slider(1, 16, value=8, step=1, label="grid size n (n x n digits)")
    with gr.Row():
        random_seed = gr.Button("Random seed")
        go = gr.Button("Generate grid", variant="primary", elem_id="gan-generate")
    picture = ui.image_output("samples", elem_id="gan-grid")
    gr.Markdown("Interpolation: `sample` returns both seeds' z, `generate` renders the path between them.")
    with gr.Row():
        seed_a = gr.Number(1, label="seed A", precision=0)
        seed_b = gr.Number(2, label="seed B", precision=0)
        steps = gr.Slider(2, 24, value=10, step=1, label="steps")
        spherical = gr.Checkbox(True, label="slerp (else a straight line)")
        walk = gr.Button("Interpolate", variant="primary")
    strip = ui.image_output("A → B", elem_id="gan-strip")
    wire = ui.wire_box("gan")

    @guard
    def grid(model_name, seed_value, n_value):
        return gan_grid(ctx, model_name, seed_value, n_value)

    @guard
    def interpolate(model_name, a, b, steps_value, spherical_value):
        return gan_interpolate(ctx, model_name, a, b, steps_value, spherical_value)

    def draw_seed():
        return int(np.random.default_rng().integers(0, 2 ** 31 - 1))

    go.click(grid, [model, seed, n], [picture, wire], api_name="gan_grid")
    random_seed.click(draw_seed, None, seed, api_name="gan_random_seed", api_visibility="private").then(
        grid, [model, seed, n], [picture, wire], api_name="gan_random_grid", api_visibility="private")
    walk.click(interpolate, [model, seed_a, seed_b, steps, spherical], [strip, wire], api_name="gan_interpolate")

