"""CLI commands of the VAE family: `train vae`, `export vae`, `eval vae`, `grid`, `encode`.

    genserve train vae --workdir work/vae --epochs 10
    genserve export vae --workdir work/vae --models-dir models
    genserve grid --target 127.0.0.1:8500 --n 15 --out out/vae_grid.png
    genserve encode --target 127.0.0.1:8500 --out out/vae_scatter.png
    genserve eval vae --workdir work/vae

Heavy imports (TensorFlow, matplotlib) happen inside the command bodies: `genserve --help`, `grid` and
`encode` never import TensorFlow.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from genserve.cli.common import (check_directory, check_export_destination, check_fresh_workdir, check_not_input,
                                 check_number, check_output_path, check_trained, fail, named, on_interrupt, report_export,
                                 training_interrupted)
from genserve.cli.options import (DEFAULT_MODELS_DIR, choices, DEFAULT_TARGET, ClientVersionOpt, ExportNameOpt,
                                  ExportVersionOpt, ForceOpt, JsonOutOpt, MnistDataset, MnistDatasetOpt, ModelOpt,
                                  ModelsDirOpt, PngOutOpt, QuietOpt, RestartOpt, ScaleOpt, SeedOpt, TargetOpt,
                                  TimeoutOpt, TrainLimitOpt)
from genserve.cli.remote import remote

WorkdirOpt = Annotated[Path, typer.Option(help="Training workdir (config.json, checkpoints).")]


Loss = choices("Loss", "elbo", "book")
Which = choices("Which", "best", "last")


def train_vae(
    ctx: typer.Context,
    workdir: WorkdirOpt = Path("work/vae"),
    dataset: MnistDatasetOpt = MnistDataset.mnist,
    epochs: Annotated[int, typer.Option(min=1, help="Total epochs (the book: 10).")] = 10,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size (the book: 16).")] = 16,
    loss: Annotated[Loss, typer.Option(help="elbo: -ELBO in nats per image; book: the book's per-pixel BCE + 5e-4 KL.")] = Loss.elbo,
    latent_dim: Annotated[int, typer.Option(min=1, help="Latent size (the book: 2).")] = 2,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="RMSprop learning rate.")] = 1e-3,
    train_limit: TrainLimitOpt = None,
    test_limit: Annotated[Optional[int], typer.Option(min=1, help="Validate on the first N test images only.")] = None,
    seed: SeedOpt = 1337,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the workdir's last checkpoint up to --epochs in total.")] = False,
    quiet: QuietOpt = False,
    force: RestartOpt = False,
) -> None:
    """Train the book's convolutional VAE (8.4); validates on the test set every epoch."""
    check_directory(workdir, "--workdir")
    check_fresh_workdir(workdir, "vae", resume=resume, named=named(ctx, "workdir"), force=force)
    check_number(learning_rate, "--learning-rate", 0.0, strictly_above=True)
    from genserve.progress import TrainingProgress

    progress = TrainingProgress(enabled=not quiet)
    with on_interrupt(training_interrupted(ctx, workdir, progress, resume), sigterm=True):
        from genserve.data import DataError
        from genserve.training.vae import VAEConfig, train

        try:
            cfg = VAEConfig(latent_dim=latent_dim, loss=loss.value, learning_rate=learning_rate,
                            batch_size=batch_size, epochs=epochs, dataset=dataset.value,
                            train_limit=train_limit, test_limit=test_limit, seed=seed)
            state = train(cfg, workdir, resume=resume, verbose=0 if quiet else None, progress=progress)
        except (DataError, ValueError, FileNotFoundError) as e:
            raise fail(str(e)) from None
    unit = " nats/image" if cfg.loss == "elbo" else ""
    typer.echo(f"best val_loss {state['best_val_loss']:.4f}{unit} at epoch {state['best_epoch']} "
               f"of {state['epoch']}; checkpoint in {workdir}")


def export_vae(
    workdir: WorkdirOpt = Path("work/vae"),
    models_dir: ModelsDirOpt = DEFAULT_MODELS_DIR,
    name: ExportNameOpt = "vae",
    version: ExportVersionOpt = None,
    which: Annotated[Which, typer.Option(help="Checkpoint: best (lowest val_loss) or last.")] = Which.best,
) -> None:
    """Export the VAE as a SavedModel with decode (default) and encode signatures."""
    check_export_destination(models_dir, name)
    check_trained(workdir, "vae")
    from genserve.export.vae import export_vae as run_export

    report_export(lambda: run_export(workdir, models_dir, name=name, version=version, which=which.value))


def eval_vae(
    workdir: WorkdirOpt = Path("work/vae"),
    dataset: Annotated[Optional[MnistDataset], typer.Option(help="Test set to use (default: the one trained on).")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Evaluate the first N test images only.")] = None,
    samples: Annotated[int, typer.Option(min=1, help="Draws of z ~ q(z|x) per image.")] = 1,
    which: Annotated[Which, typer.Option(help="Checkpoint: best or last.")] = Which.best,
    seed: Annotated[int, typer.Option(help="Seed of the z draws.")] = 0,
    json_out: JsonOutOpt = None,
) -> None:
    """Test-set negative ELBO in nats per image (reconstruction + KL) and the book's loss."""
    import dataclasses

    check_directory(workdir, "--workdir")
    if json_out is not None:
        check_output_path(json_out, (".json",), "--json")

    from genserve.data import DataError
    from genserve.training.vae import evaluate, load_images, load_trained

    try:
        cfg, encoder, decoder = load_trained(workdir, which.value)
        data_cfg = dataclasses.replace(cfg, dataset=(dataset or MnistDataset(cfg.dataset)).value, test_limit=limit,
                                       train_limit=1)
        _, x_test, _ = load_images(data_cfg)
    except (DataError, ValueError, FileNotFoundError) as e:
        raise fail(str(e)) from None
    result = evaluate(cfg, encoder, decoder, x_test, samples=samples, seed=seed)
    typer.echo(f"{data_cfg.dataset} test set, {result['images']} images, {samples} sample(s) of z each:\n"
               f"  reconstruction  {result['reconstruction']:9.3f} nats/image (BCE summed over 784 pixels)\n"
               f"  KL              {result['kl']:9.3f} nats/image\n"
               f"  negative ELBO   {result['neg_elbo']:9.3f} nats/image\n"
               f"  book loss       {result['book']:9.4f} (per-pixel BCE + {cfg.book_kl_weight:g} x mean KL term; "
               f"the book reported val_loss 0.1831)")
    if json_out is not None:
        from genserve.files import atomic_write_json

        atomic_write_json(json_out, {"workdir": str(workdir), "dataset": data_cfg.dataset, "samples": samples,
                                     **result})


def grid(
    ctx: typer.Context,
    target: TargetOpt = DEFAULT_TARGET,
    model: ModelOpt = "vae",
    version: ClientVersionOpt = None,
    n: Annotated[int, typer.Option("--n", "-n", help="Points per side (the book: 15; at most 64).")] = 15,
    low: Annotated[float, typer.Option(help="Start of the range: a quantile of N(0,1) (the book: 0.05), or a z value with --linear.")] = 0.05,
    high: Annotated[float, typer.Option(help="End of the range (the book: 0.95).")] = 0.95,
    linear: Annotated[bool, typer.Option("--linear", help="Space the points evenly in z between --low and --high instead of by quantiles.")] = False,
    scale: ScaleOpt = 1,
    out: PngOutOpt = Path("out/vae_grid.png"),
    timeout: TimeoutOpt = 30.0,
    force: ForceOpt = False,
) -> None:
    """Decode an n x n grid of latent points in ONE request and save it as a PNG."""
    from genserve.clients.images import save_grey
    from genserve.clients.vae import VAEModel, grid_axis

    spacing = "linear" if linear else "quantile"
    try:
        grid_axis(n, low, high, spacing)  # bad --n / range: say so before contacting the server
    except ValueError as e:
        raise fail(str(e)) from None
    check_output_path(out, (".png",), "--out", named=named(ctx, "out"), force=force)
    with on_interrupt():  # the PNG is written atomically: all or nothing
        with remote(target, timeout) as client:
            vae = VAEModel(client, model=model, version=version)
            latent_dim = vae.latent_dim
            start = time.perf_counter()
            picture = vae.grid(n, low, high, spacing)
            elapsed = time.perf_counter() - start
        save_grey(picture, out, scale=scale)
    typer.echo(f"wrote {out}: {n}x{n} grid from {model!r} version {vae.version} at {target} (latent size "
               f"{latent_dim}), 1 request, {elapsed * 1000:.1f} ms")


def encode(
    ctx: typer.Context,
    target: TargetOpt = DEFAULT_TARGET,
    model: ModelOpt = "vae",
    version: ClientVersionOpt = None,
    dataset: Annotated[MnistDataset, typer.Option(help="Labelled test images to place (labels come from the dataset).")] = MnistDataset.mnist,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Use the first N test images (default: all 10,000).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per request.")] = 1000,
    out: Annotated[Path, typer.Option("--out", "-o", help="Scatter plot PNG to write.")] = Path("out/vae_scatter.png"),
    npz: Annotated[Optional[Path], typer.Option(help="Also save z_mean, z_log_var and labels here (.npz).")] = None,
    timeout: TimeoutOpt = 60.0,
    force: ForceOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Place labelled test images in latent space (positions from the server) and plot them by class."""
    from genserve.clients.vae import VAEModel, encode_all, scatter_plot
    from genserve.data import DataError, mnist
    from genserve.progress import Progress

    check_output_path(out, (".png",), "--out", named=named(ctx, "out"), force=force)
    if npz is not None:
        check_output_path(npz, (".npz",), "--npz")
        check_not_input(npz, out, option="--npz")
    try:
        digits = mnist.load(dataset.value)
    except DataError as e:
        raise fail(str(e)) from None
    images, labels = digits.x_test[:limit], digits.y_test[:limit]
    progress = Progress(len(images), "encode", "images", enabled=not quiet)

    def encode_batch(x):  # (B, 28, 28) -> (z_mean, z_log_var), counted
        z = vae.encode(x)
        progress.update(len(x))
        return z

    written = []
    with on_interrupt(lambda: f"interrupted after {progress.done} of {len(images)} images; "
                      + (f"wrote {written[0]}, nothing else" if written else "nothing written")):
        with remote(target, timeout) as client:
            vae = VAEModel(client, model=model, version=version)
            z_mean, z_log_var = encode_all(encode_batch, images, batch_size=batch_size)
        scatter_plot(z_mean, labels, out, title=f"{len(images)} {dataset.value} test images in latent space")
        written.append(out)
        if npz is not None:
            import io

            import numpy as np

            from genserve.files import atomic_write

            buffer = io.BytesIO()
            np.savez(buffer, z_mean=z_mean, z_log_var=z_log_var, labels=labels)
            atomic_write(npz, buffer.getvalue())
    typer.echo(f"wrote {out}: {len(images)} images encoded in {-(-len(images) // batch_size)} request(s); "
               f"z_mean range [{z_mean.min():.2f}, {z_mean.max():.2f}]")


COMMANDS = {"train vae": train_vae, "export vae": export_vae, "eval vae": eval_vae, "grid": grid,
            "encode": encode}
