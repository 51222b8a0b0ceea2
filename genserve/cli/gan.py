"""CLI commands of the GAN family: `train gan`, `export gan`, `eval gan`, `gan-grid`, `gan-interpolate`.

    genserve train gan --workdir work/gan --epochs 10
    genserve export gan --workdir work/gan --models-dir models
    genserve gan-grid -o out/gan_grid.png --n 10 --seed 0              # ONE request
    genserve gan-interpolate -o out/gan_strip.png --seed-a 1 --seed-b 2 --steps 10   # two requests
    genserve eval gan --workdir work/gan --samples 5000

Heavy imports (TensorFlow) happen inside the command bodies: `genserve --help`, `gan-grid` and
`gan-interpolate` never import TensorFlow.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from genserve.cli.common import (check_directory, check_export_destination, check_fresh_workdir, check_number,
                                 check_output_path, check_trained, fail, named, on_interrupt, report_export,
                                 training_interrupted)
from genserve.cli.options import (DEFAULT_MODELS_DIR, DEFAULT_TARGET, ClientVersionOpt, ExportNameOpt,
                                  ExportVersionOpt, ForceOpt, JsonOutOpt, MnistDataset, MnistDatasetOpt, ModelOpt,
                                  ModelsDirOpt, PngOutOpt, QuietOpt, RestartOpt, ScaleOpt, SeedOpt, TargetOpt,
                                  TimeoutOpt, TrainLimitOpt)
from genserve.cli.remote import remote

WorkdirOpt = Annotated[Path, typer.Option(help="Training workdir (config.json, state.json, checkpoint).")]


def train_gan(
    ctx: typer.Context,
    workdir: WorkdirOpt = Path("work/gan"),
    preset: Annotated[Optional[str], typer.Option(help="A named recipe: demo (the defaults), best, wide or conditional (docs/gan.md); the options given explicitly override it.")] = None,
    dataset: MnistDatasetOpt = MnistDataset.mnist,
    epochs: Annotated[int, typer.Option(min=1, help="Total epochs.")] = 10,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size.")] = 64,
    latent_dim: Annotated[int, typer.Option(min=1, help="Latent size.")] = 100,
    learning_rate: Annotated[float, typer.Option(help="Adam learning rate (the generator's; also the discriminator's unless the preset sets its own).")] = 2e-4,
    label_noise: Annotated[float, typer.Option(help="Discriminator targets are moved this far (x U(0,1)) from 0 and 1.")] = 0.05,
    train_limit: TrainLimitOpt = None,
    seed: SeedOpt = 1337,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the workdir's verified checkpoint up to --epochs in total.")] = False,
    quiet: QuietOpt = False,
    force: RestartOpt = False,
) -> None:
    """Train a DCGAN; after every epoch: a checkpoint and an 8x8 sample grid in <workdir>/samples/."""
    check_directory(workdir, "--workdir")
    check_fresh_workdir(workdir, "gan", resume=resume, named=named(ctx, "workdir"), force=force)
    check_number(learning_rate, "--learning-rate", 0.0, strictly_above=True)
    if not 0.0 <= check_number(label_noise, "--label-noise", 0.0) < 0.5:  # GANConfig's rule, before TF loads
        raise fail(f"--label-noise must be in [0, 0.5), got {label_noise:g}")
    from genserve.progress import TrainingProgress

    progress = TrainingProgress(enabled=not quiet)
    given = {k: v for k, v in ctx.params.items() if ctx.get_parameter_source(k).name != "DEFAULT"
             and k not in ("workdir", "preset", "resume", "quiet", "force")}
    if "dataset" in given:
        given["dataset"] = dataset.value
    with on_interrupt(training_interrupted(ctx, workdir, progress, resume), sigterm=True):
        from genserve.data import DataError
        from genserve.training.gan import CheckpointError, resolve_config, train

        try:  # --resume: the workdir's config.json; else the preset; then the options given explicitly
            cfg = resolve_config(workdir, preset, resume, **given)
            start = time.perf_counter()
            state = train(cfg, workdir, resume=resume, verbose=0 if quiet else None, progress=progress)
        except (DataError, ValueError, CheckpointError) as e:
            raise fail(str(e)) from None
    last = state["history"][-1] if state["history"] else {}
    typer.echo(f"trained to epoch {state['epoch']} in {time.perf_counter() - start:.1f} s "
               f"(d_loss {last.get('d_loss', float('nan')):.4f}, g_loss {last.get('g_loss', float('nan')):.4f}); "
               f"checkpoint in {workdir}, samples in {workdir / 'samples'}")


def export_gan(
    workdir: WorkdirOpt = Path("work/gan"),
    models_dir: ModelsDirOpt = DEFAULT_MODELS_DIR,
    name: ExportNameOpt = "gan",
    version: ExportVersionOpt = None,
) -> None:
    """Export the generator as a SavedModel with generate (default) and sample signatures."""
    check_export_destination(models_dir, name)
    check_trained(workdir, "gan")
    from genserve.export.gan import export_gan as run_export
    from genserve.training.gan import CheckpointError

    report_export(lambda: run_export(workdir, models_dir, name=name, version=version), CheckpointError)


def eval_gan(
    workdir: WorkdirOpt = Path("work/gan"),
    samples: Annotated[int, typer.Option(min=2, help="Generated digits to score (at most half the test set; the other half is the reference).")] = 5000,
    seed: Annotated[int, typer.Option(help="Seed of the z draws and of the test-set split.")] = 0,
    json_out: JsonOutOpt = None,
) -> None:
    """Classifier score and Fréchet distance of generated digits vs the real test set (and real vs real)."""
    check_trained(workdir, "gan")
    if json_out is not None:
        check_output_path(json_out, (".json",), "--json")
    from genserve.data import DataError
    from genserve.training.gan import CheckpointError, evaluate

    try:
        result = evaluate(workdir, samples=samples, seed=seed)
    except (DataError, ValueError, CheckpointError) as e:
        raise fail(str(e)) from None
    accuracy = result.get("classifier_accuracy")
    typer.echo(f"{result['generated']} generated digits vs {result['reference']} real test digits"
               + (f" (classifier test accuracy {accuracy:.4f}):" if accuracy is not None else ":"))
    typer.echo(f"  classifier score   generated {result['score']:7.3f}   real {result['real_score']:7.3f}"
               "   (exp E KL(p(y|x) || p(y)), at most 10)\n"
               f"  Fréchet distance   generated {result['fid']:7.3f}   real {result['real_fid']:7.3f}"
               f"   (ratio {result['fid_ratio']:.2f}; real = the other half of the test set)")
    if json_out is not None:
        from genserve.files import atomic_write_json

        atomic_write_json(json_out, {"workdir": str(workdir), "seed": seed, **result})


def gan_grid(
    ctx: typer.Context,
    out: PngOutOpt = Path("out/gan_grid.png"),
    n: Annotated[int, typer.Option("--n", "-n", help="Digits per side (at most 64).")] = 10,
    seed: Annotated[int, typer.Option(help="First seed; the grid shows seeds seed .. seed + n*n - 1, row-major.")] = 0,
    target: TargetOpt = DEFAULT_TARGET,
    model: ModelOpt = "gan",
    version: ClientVersionOpt = None,
    scale: ScaleOpt = 1,
    timeout: TimeoutOpt = 30.0,
    force: ForceOpt = False,
) -> None:
    """Sample an n x n grid of digits in ONE request (the random draw happens on the server, by seed)."""
    from genserve.clients.gan import grid_seeds

    try:
        grid_seeds(n, seed)  # bad --n / --seed: say so before contacting the server
    except ValueError as e:
        raise fail(str(e)) from None
    check_output_path(out, (".png",), "--out", named=named(ctx, "out"), force=force)
    _render(lambda gan: gan.grid(n, seed), out, target, model, version, scale, timeout,
            f"{n}x{n} digits (seeds {seed}..{seed + n * n - 1})", "1 request for the digits")


def gan_interpolate(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write (one row of --steps digits).")] = Path("out/gan_strip.png"),
    seed_a: Annotated[int, typer.Option(help="Seed of the first digit.")] = 0,
    seed_b: Annotated[int, typer.Option(help="Seed of the last digit.")] = 1,
    steps: Annotated[int, typer.Option(help="Digits in the strip, both ends included (2 to 256).")] = 10,
    linear: Annotated[bool, typer.Option("--linear", help="Walk the straight line between the two z instead of the great circle (slerp).")] = False,
    target: TargetOpt = DEFAULT_TARGET,
    model: ModelOpt = "gan",
    version: ClientVersionOpt = None,
    scale: ScaleOpt = 1,
    timeout: TimeoutOpt = 30.0,
    force: ForceOpt = False,
) -> None:
    """A strip morphing seed A's digit into seed B's: `sample` gives both z, `generate` renders the path."""
    from genserve.clients.gan import MAX_STEPS

    if not 2 <= steps <= MAX_STEPS:
        raise fail(f"--steps must be from 2 to {MAX_STEPS}, got {steps}")
    check_output_path(out, (".png",), "--out", named=named(ctx, "out"), force=force)
    _render(lambda gan: gan.interpolate(seed_a, seed_b, steps, spherical=not linear), out, target, model,
            version, scale, timeout,
            f"{steps} digits from seed {seed_a} to seed {seed_b} ({'linear' if linear else 'slerp'})",
            "2 requests for the digits")


def _render(draw, out: Path, target: str, model: str, version, scale: int, timeout: float, what: str,
            requests: str) -> None:
    """Draw the picture with a served GANModel, save it (--out checked before), say what was written."""
    from genserve.clients.gan import GANModel
    from genserve.clients.images import save_grey

    with on_interrupt():  # the PNG is written atomically: all or nothing
        with remote(target, timeout) as client:
            gan = GANModel(client, model=model, version=version)
            start = time.perf_counter()
            picture = draw(gan)
            elapsed = time.perf_counter() - start
        save_grey(picture, out, scale=scale)
    typer.echo(f"wrote {out}: {what} from {model!r} version {gan.version} at {target}, {requests}, "
               f"{elapsed * 1000:.1f} ms")


COMMANDS = {"train gan": train_gan, "export gan": export_gan, "eval gan": eval_gan, "gan-grid": gan_grid,
            "gan-interpolate": gan_interpolate}
