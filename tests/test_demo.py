"""`make demo` end to end with tiny settings, so the demo never rots (no downloads: a corpus written
here, synthetic 28x28 digits, a random-weight VGG-shaped backbone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_script_runs_every_family_with_tiny_settings(tmp_path):
    seed = "to be, or not to be, that is the question:\nwhether 'tis nobler in the mind\n"
    words = "the mind to be or not that is question whether tis nobler in suffer slings arrows".split()
    lines = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(8)) + ",.:'"[i % 4] + "\n"
             for i in range(500)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(seed + "".join(lines), encoding="utf-8")
    out = tmp_path / "out"
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, OUT_DIR=str(out), PY=sys.executable, GENSERVE=str(bin_dir / "genserve"),
               MODELS_DIR=str(tmp_path / "models"),  # the demo's default is ./models, the serve default
               GENSERVE_CACHE=str(tmp_path / "cache"),  # proves nothing is fetched: an empty cache
               TEXT_CORPUS=str(corpus), TEXT_MAX_CHARS="30000", TEXT_EPOCHS="1", TEXT_LENGTH="20",
               VAE_DATASET="synthetic", VAE_TRAIN_LIMIT="256", VAE_EPOCHS="1",
               STYLE_BACKBONE="random-small", STYLE_HEIGHT="32", STYLE_ITERATIONS="1", STYLE_EVALS="3",
               DREAM_BACKBONE="random-small", DREAM_WIDTH="96", DREAM_OCTAVES="2", DREAM_ITERATIONS="3",
               GAN_DATASET="synthetic", GAN_TRAIN_LIMIT="256", GAN_EPOCHS="1")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "answers are correct" in result.stdout  # Google's stubs against the embedded server
    for name in ("text_generation.txt", "text_temperatures.png", "vae_grid.png", "vae_scatter.png",
                 "style_cat_great_wave.png", "style_cat_great_wave_side_by_side.png", "dream_cat.png",
                 "gan_grid.png", "gan_interpolation.png", "batch/results.jsonl"):
        assert (out / name).stat().st_size > 0, name
    generated = json.loads((out / "text_generation.json").read_text(encoding="utf-8"))
    assert len(generated["samples"]) == 4  # the book's four temperatures
    assert all(len(row["text"]) == 20 for row in generated["samples"])
    assert "1 request" in result.stdout  # the latent grid is one Predict
    batch = [json.loads(line) for line in (out / "batch" / "results.jsonl").read_text().splitlines()]
    assert batch and all(record["status"] == "ok" for record in batch), batch[:3]
