"""CLI commands of the style family: `export style` and `stylize`.

    genserve export style --backbone vgg16-offline --models-dir models
    genserve stylize examples/images/chelsea-cat.jpg examples/images/hokusai-great-wave.jpg -o out/cat.png \\
        --target 127.0.0.1:8500 --height 200 --iterations 3

There is no `train style`: the loss model is a frozen VGG. `stylize` talks to a server over gRPC and
never imports TensorFlow; `export style` imports it inside the command body.
"""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from genserve.cli.common import (ClientVersionOpt, DEFAULT_TARGET, ExportVersionOpt, TargetOpt,
                                 check_directory, check_export_destination, check_number,
                                 check_output_path, fail)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class Backbone(str, Enum):
    vgg16_offline = "vgg16-offline"
    vgg19_imagenet = "vgg19-imagenet"
    vgg16_imagenet = "vgg16-imagenet"
    random_small = "random-small"


class StyleNorm(str, Enum):
    image = "image"
    layer = "layer"


def register(app, train_app, export_app, eval_app, plot_app) -> None:
    """Add the style family's commands to the `genserve` app."""
    export_app.command("style")(export_style)
    app.command("stylize")(stylize)


def export_style(
    models_dir: Annotated[Path, typer.Option(help="Serving root (<models_dir>/<name>/<version>/).")] = Path("models"),
    backbone: Annotated[Backbone, typer.Option(help="vgg16-offline: ImageNet VGG16 from a pinned PyPI wheel (works offline); vgg19-imagenet: the book's backbone via Keras's download; random-small: tiny random VGG19-shaped net for tests.")] = Backbone.vgg16_offline,
    name: Annotated[str, typer.Option(help="Served model name.")] = "style",
    version: ExportVersionOpt = None,
    content_layer: Annotated[str, typer.Option(help="Content layer (the book: block5_conv2).")] = "block5_conv2",
    style_layer: Annotated[Optional[list[str]], typer.Option("--style-layer", help="Repeatable; default the book's block1_conv1 ... block5_conv1.")] = None,
    content_weight: Annotated[float, typer.Option(help="Content loss weight (the book: 0.025).")] = 0.025,
    style_weight: Annotated[float, typer.Option(help="Style loss weight, shared by the style layers (the book: 1.0).")] = 1.0,
    tv_weight: Annotated[float, typer.Option(help="Total-variation loss weight (the book: 1e-4).")] = 1e-4,
    style_norm: Annotated[StyleNorm, typer.Option(help="Style-loss denominator: image (the book's 4·3²·(H·W)²) or layer (Gatys: per-layer channels and size).")] = StyleNorm.image,
    seed: Annotated[int, typer.Option(help="Initialisation seed of random-small.")] = 0,
) -> None:
    """Export the style-transfer loss (targets + step signatures) built on a VGG backbone."""
    check_directory(models_dir, "--models-dir")
    for option, value in (("--content-weight", content_weight), ("--style-weight", style_weight),
                          ("--tv-weight", tv_weight)):
        check_number(value, option, minimum=0.0)
    check_export_destination(models_dir, name)
    from genserve.export.writer import ExportError
    from genserve.data import DataError
    from genserve.training.style import StyleConfig

    kwargs = dict(backbone=backbone.value, content_layer=content_layer, content_weight=content_weight,
                  style_weight=style_weight, tv_weight=tv_weight, style_norm=style_norm.value, seed=seed)
    if style_layer:
        kwargs["style_layers"] = tuple(style_layer)
    try:
        cfg = StyleConfig(**kwargs)
    except ValueError as e:
        raise fail(str(e)) from None
    from genserve.export.style import export_style as run_export

    try:
        path = run_export(cfg, models_dir, name=name, version=version)
    except (DataError, ExportError, ValueError) as e:
        raise fail(str(e)) from None
    typer.echo(f"backbone {cfg.backbone}, content {cfg.content_layer}, {len(cfg.style_layers)} style layers")
    typer.echo(f"exported {path}")


def stylize(
    content: Annotated[Path, typer.Argument(help="Content image (any format Pillow reads).")],
    style: Annotated[Path, typer.Argument(help="Style reference image (resized to the content's size, as in the book).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Result image (PNG); intermediate and side-by-side images go beside it.")],
    target: TargetOpt = DEFAULT_TARGET,
    model: Annotated[str, typer.Option(help="Served model name.")] = "style",
    version: ClientVersionOpt = None,
    height: Annotated[int, typer.Option(help="Content height in pixels; the width keeps the aspect ratio (the book: 400).")] = 400,
    iterations: Annotated[int, typer.Option(min=1, help="L-BFGS-B restarts; an image is saved after each (the book: 20).")] = 20,
    evals_per_iteration: Annotated[int, typer.Option(min=1, help="Loss evaluations per restart, scipy's maxfun (the book: 20).")] = 20,
    save_iterations: Annotated[bool, typer.Option(help="Save <output>_iterNN.png after every iteration.")] = True,
    timeout: Annotated[float, typer.Option(help="Deadline per request, seconds.")] = 120.0,
) -> None:
    """Neural style transfer: L-BFGS-B on this machine, loss and gradient from a served style model."""
    from genserve.clients.core import Client, GenserveError
    from genserve.clients.style import ImageError, RemoteStyle, load_image, save_image, side_by_side
    from genserve.clients.style import stylize as run_stylize

    check_output_path(output, IMAGE_SUFFIXES, "--output")  # before any image is read or request sent
    try:
        content_image = load_image(content, height=height)  # (H, W, 3)
        style_image = load_image(style, size=(content_image.shape[1], content_image.shape[0]))
    except ImageError as e:
        raise fail(str(e)) from None
    stem = output.with_suffix("")
    started = time.perf_counter()
    try:
        with Client(target, timeout=timeout) as client:
            remote = RemoteStyle(client, model=model, version=version)
            layers = remote.layers()
            remote.compute_targets(content_image, style_image)
            typer.echo(f"{content_image.shape[1]}x{content_image.shape[0]} px, style layers "
                       f"{', '.join(layers)}; {iterations} x {evals_per_iteration} evaluations via {target} "
                       f"({model} version {remote.version})")
            with typer.progressbar(length=iterations, label="stylize",
                                   item_show_func=lambda s: s) as bar:
                def on_iteration(i: int, image, loss: float) -> None:
                    if save_iterations:
                        save_image(image, f"{stem}_iter{i:02d}.png")
                    bar.current_item = f"loss {loss:.4g}"
                    bar.update(1)

                result = run_stylize(remote, content_image, iterations=iterations,
                                     evals_per_iteration=evals_per_iteration, callback=on_iteration)
    except GenserveError as e:
        raise fail(f"{target}: {e.code.name}: {e.details}") from None
    except ValueError as e:
        raise fail(str(e)) from None
    save_image(result.image, output)
    figure = save_image(side_by_side([content_image, style_image, result.image]), f"{stem}_side_by_side.png")
    elapsed = time.perf_counter() - started
    ratio = result.losses[-1] / result.initial_loss if result.initial_loss else float("nan")
    typer.echo(f"loss {result.initial_loss:.4g} -> {result.losses[-1]:.4g} (ratio {ratio:.3g}) in "
               f"{result.evaluations} evaluations, {elapsed:.1f} s; wrote {output} and {figure}")
