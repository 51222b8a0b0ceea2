"""CLI commands of the style family: `export style` and `stylize`.

    genserve export style --backbone vgg16-offline --models-dir models
    genserve stylize examples/images/chelsea-cat.jpg examples/images/hokusai-great-wave.jpg -o out/cat.png \\
        --target 127.0.0.1:8500 --height 200 --iterations 3

There is no `train style`: the loss model is a frozen VGG. `stylize` talks to a server over gRPC and
never imports TensorFlow; `export style` imports it inside the command body.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from genserve.cli.common import (check_export_destination, check_not_input, check_number, check_output_path, fail,
                                 on_interrupt, report_export)
from genserve.cli.options import (DEFAULT_MODELS_DIR, choices, DEFAULT_TARGET, IMAGE_SUFFIXES, BackboneSeedOpt,
                                  ClientVersionOpt, ExportNameOpt, ExportVersionOpt, ModelOpt, ModelsDirOpt,
                                  TargetOpt, TimeoutOpt)
from genserve.cli.remote import remote


Backbone = choices("Backbone", "vgg16-offline", "vgg19-imagenet", "vgg16-imagenet", "random-small")
StyleNorm = choices("StyleNorm", "image", "layer")


def export_style(
    models_dir: ModelsDirOpt = DEFAULT_MODELS_DIR,
    backbone: Annotated[Backbone, typer.Option(help="vgg16-offline: ImageNet VGG16 from a pinned PyPI wheel (works offline); vgg19-imagenet: the book's backbone via Keras's download; random-small: tiny random VGG19-shaped net for tests.")] = Backbone.vgg16_offline,
    name: ExportNameOpt = "style",
    version: ExportVersionOpt = None,
    content_layer: Annotated[str, typer.Option(help="Content layer (the book: block5_conv2).")] = "block5_conv2",
    style_layer: Annotated[Optional[list[str]], typer.Option("--style-layer", help="Repeatable; default the book's block1_conv1 ... block5_conv1.")] = None,
    content_weight: Annotated[float, typer.Option(help="Content loss weight (the book: 0.025).")] = 0.025,
    style_weight: Annotated[float, typer.Option(help="Style loss weight, shared by the style layers (the book: 1.0).")] = 1.0,
    tv_weight: Annotated[float, typer.Option(help="Total-variation loss weight (the book: 1e-4).")] = 1e-4,
    style_norm: Annotated[StyleNorm, typer.Option(help="Style-loss denominator: image (the book's 4·3²·(H·W)²) or layer (Gatys: per-layer channels and size).")] = StyleNorm.image,
    seed: BackboneSeedOpt = 0,
) -> None:
    """Export the style-transfer loss (targets + step signatures) built on a VGG backbone."""
    for option, value in (("--content-weight", content_weight), ("--style-weight", style_weight),
                          ("--tv-weight", tv_weight)):
        check_number(value, option, minimum=0.0)
    check_export_destination(models_dir, name)
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

    report_export(lambda: run_export(cfg, models_dir, name=name, version=version), DataError,
                  note=f"backbone {cfg.backbone}, content {cfg.content_layer}, {len(cfg.style_layers)} style layers")


def stylize(
    content: Annotated[Path, typer.Argument(help="Content image (any format Pillow reads).")],
    style: Annotated[Path, typer.Argument(help="Style reference image (resized to the content's size, as in the book).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Result image (PNG); intermediate and side-by-side images go beside it.")],
    target: TargetOpt = DEFAULT_TARGET,
    model: ModelOpt = "style",
    version: ClientVersionOpt = None,
    height: Annotated[int, typer.Option(help="Content height in pixels; the width keeps the aspect ratio (the book: 400).")] = 400,
    iterations: Annotated[int, typer.Option(min=1, help="L-BFGS-B restarts; an image is saved after each (the book: 20).")] = 20,
    evals_per_iteration: Annotated[int, typer.Option(min=1, help="Loss evaluations per restart, scipy's maxfun (the book: 20).")] = 20,
    save_iterations: Annotated[bool, typer.Option(help="Save <output>_iterNN.png after every iteration.")] = True,
    timeout: TimeoutOpt = 120.0,
) -> None:
    """Neural style transfer: L-BFGS-B on this machine, loss and gradient from a served style model."""
    from genserve.clients.images import ImageError, save_rgb
    from genserve.clients.style import RemoteStyle, load_image, side_by_side
    from genserve.clients.style import stylize as run_stylize
    from genserve.progress import Progress

    stem = output.with_suffix("")
    figure_path = Path(f"{stem}_side_by_side.png")
    iteration_path = lambda i: Path(f"{stem}_iter{i:02d}.png")  # noqa: E731
    written = [output, figure_path]
    if save_iterations:  # an input named like an iteration's image (<stem>_iterNN.png) would be replaced
        pattern = re.compile(rf"{re.escape(stem.name)}_iter(\d+)\.png")
        for source in (content, style):
            match = pattern.fullmatch(Path(source).name)
            if match and 1 <= int(match.group(1)) <= iterations:
                written.append(iteration_path(int(match.group(1))))
    for path in written:  # none of the files written is an input
        check_not_input(path, content, style, option="--output")
    check_output_path(output, IMAGE_SUFFIXES, "--output")  # before any image is read or request sent
    try:
        content_image = load_image(content, height=height)  # (H, W, 3)
        style_image = load_image(style, size=(content_image.shape[1], content_image.shape[0]))
    except ImageError as e:
        raise fail(str(e)) from None
    started = time.perf_counter()
    progress = Progress(iterations, "stylize", "iterations", interval=0)  # one line per L-BFGS-B iteration

    def kept() -> str:
        done = progress.done
        saved = ("" if not (save_iterations and done) else
                 f"; kept {iteration_path(1)}" + (f" .. {iteration_path(done)}" if done > 1 else ""))
        return f"interrupted after {done} of {iterations} iterations{saved}; {output} not written"

    with on_interrupt(kept):
        with remote(target, timeout) as client:
            style_model = RemoteStyle(client, model=model, version=version)
            layers = style_model.layers()
            style_model.compute_targets(content_image, style_image)
            typer.echo(f"{content_image.shape[1]}x{content_image.shape[0]} px, style layers "
                       f"{', '.join(layers)}; {iterations} x {evals_per_iteration} evaluations via {target} "
                       f"({model} version {style_model.version})")

            def on_iteration(i: int, image, loss: float) -> None:
                if save_iterations:
                    save_rgb(image, iteration_path(i))
                progress.update(1, note=f"loss {loss:.4g}")

            result = run_stylize(style_model, content_image, iterations=iterations,
                                 evals_per_iteration=evals_per_iteration, callback=on_iteration)
        save_rgb(result.image, output)
        figure = save_rgb(side_by_side([content_image, style_image, result.image]), figure_path)
    elapsed = time.perf_counter() - started
    ratio = result.losses[-1] / result.initial_loss if result.initial_loss else float("nan")
    typer.echo(f"loss {result.initial_loss:.4g} -> {result.losses[-1]:.4g} (ratio {ratio:.3g}) in "
               f"{result.evaluations} evaluations, {elapsed:.1f} s; wrote {output} and {figure}")


COMMANDS = {"export style": export_style, "stylize": stylize}
