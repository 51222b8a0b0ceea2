"""Batch jobs vs the naive loop of one CLI process per item, against ONE server, in one run (not a test).

    .venv/bin/python benchmarks/batch_jobs.py                         # 2,000 text + 225 grid items
    .venv/bin/python benchmarks/batch_jobs.py --text-items 400 --no-ray     # quicker
    .venv/bin/python benchmarks/batch_jobs.py --text-workdir work/text       # a trained text model

What it measures (issue 10), all against one `genserve serve` process on 127.0.0.1:
1. text: N items (one stream each: 400 characters at one of the book's temperatures 0.2/0.5/1.0/1.2,
   server-side sampling, seed = item number): the naive loop runs `genserve generate --server-side`
   once per item — timed on a small subset (--naive-sample processes) and extrapolated per item, as
   the output says — vs `genserve batch run --engine local` vs `--engine ray`, each a whole process
   timed end to end (start-up, validation, Ray's start included); items/s and generated chars/s.
   The subset's texts are checked to be identical to the batch run's files.
2. grid: 225 items of a 15x15 latent grid: the naive loop of `genserve grid` (subset, extrapolated)
   vs `genserve batch run` (all 225 grids, 50,625 latent points in 4,096-row decode requests).
The models are the book's architectures (LSTM 128 units, maxlen 60; the book's conv VAE) with random
weights unless --text-workdir is given: speed does not depend on the weights, and the output says which.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.harness import export_untrained_text, export_untrained_vae, free_port  # noqa: E402
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TEMPERATURES = (0.2, 0.5, 1.0, 1.2)
SEED_TEXT = "to be, or not to be, that is the question: whether 'tis nobler in the mind to suffer"
GENSERVE = [sys.executable, "-m", "genserve"]


def build_models(models: Path, text_workdir: Path | None) -> str:
    """Export a text model and a VAE into `models`; returns a description of the text model."""
    from genserve.export.text import export_text

    work = models.parent / "work"
    described = f"trained checkpoint {text_workdir}"
    if text_workdir is None:
        export_untrained_text(models, work / "text")  # the book: LSTM 128 units, maxlen 60
        described = "book config (LSTM 128 units, maxlen 60), random weights"
    else:
        export_text(text_workdir, models)
    export_untrained_vae(models, work / "vae")
    return described


def run(cmd: list[str], quiet: bool = True) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=quiet, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr if quiet else ''}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text-items", type=int, default=2000)
    parser.add_argument("--length", type=int, default=400)
    parser.add_argument("--grid-items", type=int, default=225)
    parser.add_argument("--n", type=int, default=15, help="grid side")
    parser.add_argument("--naive-sample", type=int, default=10, help="naive-loop processes actually run")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--max-rows", type=int, default=None, help="rows per request (default per kind)")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive loop (batch rows only)")
    parser.add_argument("--text-workdir", type=Path, help="a trained text workdir (default: random weights)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="genserve-batch-bench-") as tmp:
        tmp = Path(tmp)
        described = build_models(tmp / "models", args.text_workdir)
        port = free_port()
        target = f"127.0.0.1:{port}"
        server = subprocess.Popen(GENSERVE + ["serve", "--models-dir", str(tmp / "models"), "--port", str(port),
                                              "--poll-seconds", "0"], stdout=subprocess.DEVNULL,
                                  stderr=open(tmp / "server.log", "w"))
        try:
            for model in ("text", "vae"):
                run([sys.executable, str(ROOT / "scripts" / "wait_for_model.py"), target, model, "--timeout", "180"])
            rows = measure(args, tmp, target)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"\nbatch jobs vs the naive loop, one `genserve serve` on {target.split(':')[0]}, "
          f"{os.cpu_count()} CPU cores; text model: {described}; VAE: book config, random weights")
    print(f"naive rows: {args.naive_sample} processes run, time per item extrapolated to all items")
    print(f"{'method':<58} {'items':>6} {'wall s':>9} {'items/s':>9} {'chars/s':>10} {'vs naive':>9}")
    for label, items, seconds, chars, naive_seconds in rows:
        chars_s = f"{chars / seconds:>10,.0f}" if chars else f"{'':>10}"
        ratio = f"{naive_seconds / seconds:>8.1f}x" if naive_seconds else f"{'':>9}"
        print(f"{label:<58} {items:>6} {seconds:>9.2f} {items / seconds:>9.1f} {chars_s} {ratio}")
    print("goals: text batch >= 50x the naive loop and >= 100,000 chars/s; grid batch >= 20x")


def measure(args, tmp: Path, target: str) -> list[tuple]:
    rows = []
    # -- text ----------------------------------------------------------------------------------------
    job = tmp / "text.jsonl"
    items = [{"id": f"t{i:05d}", "kind": "text", "seed_text": SEED_TEXT, "length": args.length,
              "temperature": TEMPERATURES[i % 4], "seed": i} for i in range(args.text_items)]
    job.write_text("".join(json.dumps(item) + "\n" for item in items))
    sample = [] if args.no_naive else items[:args.naive_sample]
    naive = 0.0
    for item in sample:
        naive += run(GENSERVE + ["generate", "--target", target, "--server-side", "--seed-text", SEED_TEXT,
                                 "--length", str(args.length), "-t", str(item["temperature"]),
                                 "--seed", str(item["seed"]), "--json", str(tmp / f"naive-{item['id']}.json")])
    naive_all = naive / len(sample) * len(items) if sample else 0.0
    chars = len(items) * args.length
    if sample:
        rows.append((f"naive: `genserve generate --server-side` x {len(items)} (extrapolated)", len(items),
                     naive_all, chars, naive_all))
    extra = ["--concurrency", str(args.concurrency), "--quiet"]
    if args.max_rows:
        extra += ["--max-rows", str(args.max_rows)]
    engines = ["local"] + ([] if args.no_ray else ["ray"])
    # --models-dir: the same job with no server of its own (the models served in process)
    models_dir = ["--models-dir", str(tmp / "models")]
    for engine in engines + ["models-dir"]:
        out = tmp / f"text-{engine}"
        where = models_dir if engine == "models-dir" else ["--target", target, "--engine", engine]
        seconds = run(GENSERVE + ["batch", "run", str(job), "--out", str(out)] + where + extra)
        label = "batch run --models-dir" if engine == "models-dir" else f"batch run --engine {engine}"
        rows.append((f"{label} (whole process)", len(items), seconds, chars, naive_all))
        for item in sample:  # the same text as the naive loop's
            want = json.loads((tmp / f"naive-{item['id']}.json").read_text())["samples"][0]["text"]
            got = (out / f"{item['id']}.txt").read_text()
            if got != want:
                raise SystemExit(f"{engine}: {item['id']} differs from `genserve generate` for the same seed")
    # -- grid ----------------------------------------------------------------------------------------
    job = tmp / "grid.jsonl"
    job.write_text("".join(json.dumps({"id": f"g{i:04d}", "kind": "grid", "n": args.n}) + "\n"
                           for i in range(args.grid_items)))
    naive_runs = 0 if args.no_naive else args.naive_sample
    naive = sum(run(GENSERVE + ["grid", "--target", target, "--n", str(args.n), "--out",
                                str(tmp / f"naive-grid-{i}.png")]) for i in range(naive_runs))
    naive_all = naive / naive_runs * args.grid_items if naive_runs else 0.0
    if naive_runs:
        rows.append((f"naive: `genserve grid --n {args.n}` x {args.grid_items} (extrapolated)", args.grid_items,
                     naive_all, 0, naive_all))
    for engine in engines + ["models-dir"]:
        where = models_dir if engine == "models-dir" else ["--target", target, "--engine", engine]
        seconds = run(GENSERVE + ["batch", "run", str(job), "--out", str(tmp / f"grid-{engine}")] + where + extra)
        label = "batch run --models-dir" if engine == "models-dir" else f"batch run --engine {engine}"
        rows.append((f"{label}: {args.grid_items} grids (whole process)", args.grid_items, seconds, 0, naive_all))
    return rows


if __name__ == "__main__":
    main()
