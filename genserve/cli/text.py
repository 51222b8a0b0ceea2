"""CLI commands of the text family: `train text`, `export text`, `generate`, `plot temperatures`.

    genserve train text --corpus shakespeare --max-chars 200000 --epochs 1 --workdir work/text
    genserve train text --layers 2 --units 256 --dropout 0.2 --targets all --step 60 --val-step 3 \
        --batch-size 32 --optimizer adam --learning-rate 0.003 --schedule cosine --warmup-epochs 1 \
        --epochs 12 --patience 3 --workdir work/text-big
    genserve export text --workdir work/text --models-dir models
    genserve generate --target 127.0.0.1:8500 --seed-text "to be, or not to be" --length 200
    genserve generate --target 127.0.0.1:8500 --server-side     # the whole round in one request

Heavy imports (TensorFlow, matplotlib) happen inside the command bodies, so `genserve --help` and
`genserve generate` never import TensorFlow.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from genserve.cli.common import (check_directory, check_export_destination, check_fresh_workdir, check_number,
                                 check_output_path, check_trained, fail, named, on_interrupt, report_export,
                                 training_interrupted)
from genserve.cli.options import (DEFAULT_MODELS_DIR, DEFAULT_TARGET, ClientVersionOpt, ExportNameOpt,
                                  ExportVersionOpt, ForceOpt, ModelOpt, ModelsDirOpt, RestartOpt, TargetOpt,
                                  TimeoutOpt)
from genserve.cli.remote import remote


def train_text(
    ctx: typer.Context,
    workdir: Annotated[Path, typer.Option(help="Checkpoint folder (best.keras, config.json, vocabulary.json).")] = Path("work/text"),
    preset: Annotated[Optional[str], typer.Option(help="A named recipe: book (the defaults) or best (docs/text.md); the options given explicitly override it.")] = None,
    corpus: Annotated[str, typer.Option(help="shakespeare (offline, ~1.1 MB), shakespeare-full, nietzsche (online) or a UTF-8 file path.")] = "shakespeare",
    epochs: Annotated[int, typer.Option(min=1, help="Epochs (the book: 60).")] = 60,
    max_chars: Annotated[Optional[int], typer.Option(min=1, help="Use only the first N characters of the corpus.")] = None,
    extra_train: Annotated[Optional[str], typer.Option(help="Also train on this corpus (name or file) beyond --corpus, e.g. shakespeare-full (preset best's); the held-out split stays --corpus's last 10 %. none: only --corpus.")] = None,
    maxlen: Annotated[int, typer.Option(min=1, help="Window length (the book: 60).")] = 60,
    step: Annotated[int, typer.Option(min=1, help="Stride between training windows (the book: 3).")] = 3,
    val_step: Annotated[Optional[int], typer.Option(min=1, help="Stride between validation windows (default: --step; the book's measure: 3).")] = None,
    units: Annotated[int, typer.Option(min=1, help="LSTM units per layer (the book: 128).")] = 128,
    layers: Annotated[int, typer.Option(min=1, help="Stacked LSTM layers (the book: 1).")] = 1,
    dropout: Annotated[float, typer.Option(min=0.0, max=0.95, help="Dropout after each LSTM layer while training (the book: 0).")] = 0.0,
    targets: Annotated[str, typer.Option(help="last: one target per window (the book); all: every position's next character.")] = "last",
    optimizer: Annotated[str, typer.Option(help="rmsprop (the book) or adam.")] = "rmsprop",
    learning_rate: Annotated[float, typer.Option(min=0.0, help="Peak learning rate (the book: 0.01).")] = 0.01,
    schedule: Annotated[str, typer.Option(help="constant (the book), cosine (decays over --epochs) or plateau (halve after an epoch without improvement).")] = "constant",
    warmup_epochs: Annotated[int, typer.Option(min=0, help="Linear learning-rate warmup epochs.")] = 0,
    patience: Annotated[Optional[int], typer.Option(min=1, help="Stop after N epochs without a better validation loss (default: never).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size (the book: 128).")] = 128,
    encoding: Annotated[str, typer.Option(help="Model input: onehot (the book's, built inside the model; measured faster) or embedding.")] = "onehot",
    keep_case: Annotated[bool, typer.Option("--keep-case", help="Do not lower-case the corpus.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 1337,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the workdir's last checkpoint.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar; only the per-epoch summary lines.")] = False,
    force: RestartOpt = False,
) -> None:
    """Train the book's character-level LSTM (8.1) on a corpus, with a held-out validation split."""
    from genserve.progress import TrainingProgress

    progress = TrainingProgress(enabled=not quiet)
    with on_interrupt(training_interrupted(ctx, workdir, progress, resume), sigterm=True):
        _train_text(ctx, workdir, preset, encoding, keep_case, resume, quiet, force, learning_rate, progress)


def _train_text(ctx, workdir, preset, encoding, keep_case, resume, quiet, force, learning_rate, progress) -> None:
    from genserve.data import DataError
    from genserve.data.text import load_corpus
    from genserve.training.text_config import resolve_config

    check_directory(workdir, option="--workdir")
    check_fresh_workdir(workdir, "text", resume=resume, named=named(ctx, "workdir"), force=force)
    check_number(learning_rate, "--learning-rate", 0.0, strictly_above=True)
    if encoding not in ("onehot", "embedding"):
        raise fail(f"--encoding must be onehot or embedding, got {encoding!r}")
    try:
        given = {k: v for k, v in ctx.params.items() if ctx.get_parameter_source(k).name != "DEFAULT"
                 and k not in ("workdir", "preset", "resume", "quiet", "keep_case", "force")}
        if keep_case:
            given["lower"] = False
        if str(given.get("extra_train", "")).lower() == "none":
            given["extra_train"] = None  # a preset's extra corpus switched off
        # --resume: the workdir's config.json; else the preset; then the options given explicitly
        cfg = resolve_config(workdir, preset, resume, **given)
    except ValueError as e:
        raise fail(str(e).replace("_", "-")) from None
    try:  # the corpus is read before TensorFlow is imported: a wrong file is refused in a fraction of a second
        text = load_corpus(cfg.corpus, lower=cfg.lower, max_chars=cfg.max_chars)
    except (DataError, ValueError, FileNotFoundError) as e:
        raise fail(str(e)) from None
    try:
        extra = None if cfg.extra_train is None else load_corpus(cfg.extra_train, lower=cfg.lower)
    except (DataError, ValueError, FileNotFoundError) as e:
        raise fail(f"--extra-train: {e}") from None
    from genserve.training.text import train

    try:
        result = train(cfg, workdir, resume=resume, verbose=0 if quiet else 1, log=typer.echo, progress=progress,
                       text=text, extra_text=extra)
    except (DataError, ValueError, FileNotFoundError) as e:
        raise fail(str(e)) from None
    typer.echo(f"best val loss {result['best_val_loss']:.4f} nats/char "
               f"({result['best_val_bits']:.4f} bits/char) after {result['epochs']} epochs"
               + (" (early stop)" if result["early_stopped"] else "") + f"; checkpoint in {workdir}")


def export_text(
    workdir: Annotated[Path, typer.Option(help="Training workdir to export the best checkpoint of.")] = Path("work/text"),
    models_dir: ModelsDirOpt = DEFAULT_MODELS_DIR,
    name: ExportNameOpt = "text",
    version: ExportVersionOpt = None,
) -> None:
    """Export the text model as a SavedModel with next_char, step, prime, info and generate signatures."""
    check_export_destination(models_dir, name)
    check_trained(workdir, "text", "best.keras")
    from genserve.training.text import CheckpointError, verify_checkpoint

    try:
        verify_checkpoint(workdir / "best.keras")  # before TensorFlow loads: one clear line
    except CheckpointError as e:
        raise fail(str(e)) from None
    from genserve.export.text import export_text as run_export

    report_export(lambda: run_export(workdir, models_dir, name=name, version=version))


def generate(
    target: TargetOpt = DEFAULT_TARGET,
    model: ModelOpt = "text",
    version: ClientVersionOpt = None,
    seed_text: Annotated[str, typer.Option(help="Text to continue; its last maxlen characters are used.")] = "to be, or not to be, that is the question:\nwhether 'tis nobler in the mind",
    length: Annotated[int, typer.Option(help="Characters to generate per stream (the book: 400; at most 20,000).")] = 400,
    temperature: Annotated[Optional[list[float]], typer.Option("--temperature", "-t", help="Repeatable; default the book's 0.2 0.5 1.0 1.2; 0 = greedy.")] = None,
    samples: Annotated[int, typer.Option(help="Streams per temperature.")] = 1,
    top_k: Annotated[Optional[int], typer.Option(help="Sample only among the k most likely characters.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (same seed -> same text).")] = None,
    replace_unknown: Annotated[Optional[str], typer.Option(help="Character to substitute for seed characters outside the vocabulary.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the result as JSON here.")] = None,
    timeout: TimeoutOpt = 30.0,
    server_side: Annotated[bool, typer.Option("--server-side", help="One `generate` request samples everything on the server (no --top-k; needs an export with the generate signature).")] = False,
) -> None:
    """Generate text from a served text model at several temperatures, all streams batched per request."""
    from genserve.clients.text import BOOK_TEMPERATURES, check_length, check_temperatures

    temps = list(temperature) if temperature else list(BOOK_TEMPERATURES)
    try:
        check_temperatures(temps)
        check_length(length)
    except ValueError as e:
        raise fail(f"--length: {e}" if "length" in str(e) else str(e)) from None
    if json_out is not None:
        check_output_path(json_out, (".json",), option="--json")
    if replace_unknown is not None and len(replace_unknown) != 1:
        raise fail("--replace-unknown takes exactly one character")
    if server_side and top_k is not None:
        raise fail("--top-k is not available with --server-side")
    streaming = len(temps) * samples == 1 and not server_side
    echo = lambda s: (sys.stdout.write(s), sys.stdout.flush())
    with on_interrupt("interrupted; nothing written" + (" (no --json file)" if json_out else "")):
        result, text_model = _generate(target, timeout, model, version, seed_text, length, temps, samples, seed,
                                       top_k, replace_unknown, server_side, streaming, echo)
    if streaming:
        echo("\n")
    else:  # the book's shape: the seed, then each temperature's continuation
        echo(f'--- seed: "{result["seed"]}"\n')
        for row in result["samples"]:
            label = f"--- temperature {row['temperature']}"
            label += f", sample {row['sample'] + 1}" if samples > 1 else ""
            echo(f"{label}\n{result['seed']}{row['text']}\n\n")
    if json_out is not None:
        import json

        from genserve.files import atomic_write

        record = {"target": target, "model": model, "version": text_model.version, **result}
        atomic_write(json_out, json.dumps(record, indent=2, ensure_ascii=False) + "\n")


def _generate(target, timeout, model, version, seed_text, length, temps, samples, seed, top_k, replace_unknown,
              server_side, streaming, echo):
    """`generate`'s requests: (the result, the TextModel); one stream is echoed as it arrives, several
    get a progress line on stderr."""
    from genserve.clients import GenserveError
    from genserve.clients.text import TextModel
    from genserve.clients.text import generate as run_generate
    from genserve.progress import Progress

    with remote(target, timeout) as client:
        text_model = TextModel(client, model=model, version=version)
        try:
            on_step = None
            if streaming:  # one stream: print characters as they arrive
                on_step = lambda i, ids: echo(text_model.decode(ids[:1]))
                seed_used = text_model.encode(seed_text, replace_unknown)[-text_model.info.maxlen:]
                seed_str = text_model.decode(seed_used)
                echo(f'--- seed: "{seed_str}"\n--- temperature {temps[0]}\n{seed_str}')
            elif not server_side:  # several streams: progress on stderr
                progress = Progress(length, f"generating {len(temps) * samples} streams", "characters")
                on_step = lambda i, ids: progress.update(1)
            result = run_generate(text_model, seed_text, length=length, temperatures=temps,
                                  samples=samples, seed=seed, top_k=top_k, replace_unknown=replace_unknown,
                                  on_step=on_step, server_side=server_side)
        except (GenserveError, KeyboardInterrupt):
            if streaming:
                echo("\n")  # what was streamed stays on stdout, ended cleanly
            raise
    return result, text_model


def plot_temperatures(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="PNG file to write.")] = Path("out/temperatures.png"),
    seed: Annotated[int, typer.Option(help="Seed of the random example distribution.")] = 0,
    force: ForceOpt = False,
) -> None:
    """The 2x3 figure of one distribution re-weighted at temperatures 0.01 ... 1.0."""
    check_output_path(out, (".png",), option="--out", named=named(ctx, "out"), force=force)
    import numpy as np

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genserve.clients.images import save_figure
    from genserve.clients.text import reweight

    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(10))  # (10,) an example next-character distribution
    temps = (0.01, 0.2, 0.4, 0.6, 0.8, 1.0)
    fig, axes = plt.subplots(2, 3, figsize=(10, 5.5), sharey=True)
    for ax, t in zip(axes.flat, temps):
        ax.bar(np.arange(p.size), reweight(p, t))
        ax.set_title(f"temperature = {t}")
        ax.set_xticks(np.arange(p.size))
    fig.suptitle("One distribution re-weighted: softmax(log p / T)")
    fig.tight_layout()
    save_figure(fig, out, dpi=100)
    typer.echo(f"wrote {out}")


COMMANDS = {"train text": train_text, "export text": export_text, "generate": generate,
            "plot temperatures": plot_temperatures}
