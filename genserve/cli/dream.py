"""CLI commands of the dream family: `export dream` and `dream`.

    genserve export dream --backbone vgg16-offline --models-dir models
    genserve dream examples/images/chelsea-cat.jpg -o out/cat_dream.png --target 127.0.0.1:8500 --width 300

There is no `train dream`: the model is a frozen convnet. `dream` talks to a server over gRPC and never
imports TensorFlow; `export dream` imports it inside the command body.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from genserve.cli.common import (check_export_destination, check_not_input, check_output_path, fail, on_interrupt,
                                 report_export)
from genserve.cli.options import (DEFAULT_MODELS_DIR, choices, DEFAULT_TARGET, IMAGE_SUFFIXES, BackboneSeedOpt,
                                  ClientVersionOpt, ExportNameOpt, ExportVersionOpt, ModelOpt, ModelsDirOpt,
                                  TargetOpt, TimeoutOpt)
from genserve.cli.remote import remote


Backbone = choices("Backbone", "vgg16-offline", "inception-v3-imagenet", "random-small")


def export_dream(
    models_dir: ModelsDirOpt = DEFAULT_MODELS_DIR,
    backbone: Annotated[Backbone, typer.Option(help="vgg16-offline: ImageNet VGG16 from a pinned PyPI wheel (works offline); inception-v3-imagenet: the book's InceptionV3 via Keras's download; random-small: tiny random net for tests.")] = Backbone.vgg16_offline,
    name: ExportNameOpt = "dream",
    version: ExportVersionOpt = None,
    layer: Annotated[Optional[list[str]], typer.Option("--layer", help="LAYER=COEFF, repeatable; default: the backbone's mix (docs/dream.md).")] = None,
    border: Annotated[int, typer.Option(min=0, help="Activation pixels ignored at each edge (the book: 2).")] = 2,
    seed: BackboneSeedOpt = 0,
) -> None:
    """Export the DeepDream model (ascend + gradient signatures) built on a convnet backbone."""
    check_export_destination(models_dir, name)
    layers = []
    for item in layer or ():
        name_, _, coeff = item.partition("=")
        try:
            layers.append((name_.strip(), float(coeff)))
        except ValueError:
            raise fail(f"--layer {item!r}: expected LAYER=COEFF, e.g. block4_conv3=0.004") from None
        if not name_.strip():
            raise fail(f"--layer {item!r}: expected LAYER=COEFF, e.g. block4_conv3=0.004")
    from genserve.data import DataError
    from genserve.export.dream import DreamConfig
    from genserve.export.dream import export_dream as run_export

    try:
        cfg = DreamConfig(backbone=backbone.value, layers=tuple(layers), border=border, seed=seed)
    except ValueError as e:
        raise fail(str(e)) from None
    mix = ", ".join(f"{n} {c:g}" for n, c in cfg.layers)
    report_export(lambda: run_export(cfg, models_dir, name=name, version=version), DataError,
                  note=f"backbone {cfg.backbone}, layers {mix}, border {cfg.border}")


def dream(
    image: Annotated[Path, typer.Argument(help="Input photo (any format Pillow reads).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Result image (PNG or JPEG).")],
    target: TargetOpt = DEFAULT_TARGET,
    model: ModelOpt = "dream",
    version: ClientVersionOpt = None,
    octaves: Annotated[int, typer.Option(help="Octaves, each --scale times larger than the last (the book: 3).")] = 3,
    scale: Annotated[float, typer.Option(help="Size ratio between octaves (the book: 1.4).")] = 1.4,
    iterations: Annotated[int, typer.Option(help="Ascent steps per octave (the book: 20).")] = 20,
    step: Annotated[float, typer.Option(help="Step size: pixels move 127.5*step*g/mean|g| per step (the book: 0.01).")] = 0.01,
    max_loss: Annotated[float, typer.Option(help="Stop an octave once its loss exceeds this (the book: 15; inf: never).")] = 15.0,
    width: Annotated[Optional[int], typer.Option(help="Resize the input to this width first (aspect kept).")] = None,
    tile_size: Annotated[int, typer.Option(min=0, help="Octaves larger than this go through tiled `gradient` requests with random shifts; smaller ones are one `ascend` request (0: never tile).")] = 512,
    seed: Annotated[int, typer.Option(help="Seed of the tiles' random shifts.")] = 0,
    timeout: TimeoutOpt = 300.0,
) -> None:
    """DeepDream: the book's octave schedule here, gradient ascent on a served dream model."""
    import numpy as np

    from genserve.clients.dream import DreamSchedule, RemoteDream, load_image
    from genserve.clients.dream import dream as run_dream
    from genserve.clients.images import ImageError, save_rgb
    from genserve.progress import Progress

    schedule = DreamSchedule(octaves=octaves, scale=scale, iterations=iterations, step=step, max_loss=max_loss)
    try:
        schedule.check()
    except ValueError as e:
        raise fail(f"--{str(e).replace('_', '-')}") from None
    if width is not None and width < 1:
        raise fail(f"--width must be >= 1, got {width}")
    if 0 < tile_size < 32:
        raise fail(f"--tile-size must be 0 (never tile) or at least 32 px, got {tile_size}")
    check_not_input(output, image)
    check_output_path(output, IMAGE_SUFFIXES, "--output")  # before any image is read or request sent
    try:
        picture = load_image(image, width=width)  # (H, W, 3)
    except ImageError as e:
        raise fail(str(e)) from None
    started = time.perf_counter()
    progress = Progress(octaves, "dream", "octaves", interval=0)  # one line per octave off a terminal

    def on_octave(octave: int, x, losses) -> None:
        stopped = bool(len(losses)) and losses[-1] > max_loss  # the last loss ended the octave
        steps = len(losses) - int(stopped)
        span = f"loss {losses[0]:.3g} -> {losses[-1]:.3g}" if len(losses) else "no steps"
        progress.update(1, note=f"octave {octave}/{octaves}: {x.shape[1]}x{x.shape[0]} px, {steps} steps, {span}"
                        + (f" (stopped: > max_loss {max_loss:g})" if stopped else ""))

    with on_interrupt(lambda: f"interrupted after {progress.done} of {octaves} octaves; nothing written"):
        with remote(target, timeout) as client:
            dream_model = RemoteDream(client, model=model, version=version)
            ascend_fn = dream_model.ascend_fn(tile_size=tile_size, rng=np.random.default_rng(seed))
            result = run_dream(ascend_fn, picture, schedule, callback=on_octave)
        save_rgb(result.image, output)
    elapsed = time.perf_counter() - started
    limit = "no max_loss" if math.isinf(max_loss) else f"max_loss {max_loss:g}"
    typer.echo(f"{picture.shape[1]}x{picture.shape[0]} px, {octaves} octaves x {iterations} steps, {limit}: "
               f"{dream_model.requests} requests to {model} version {dream_model.version} in {elapsed:.1f} s; "
               f"wrote {output}")


COMMANDS = {"export dream": export_dream, "dream": dream}
