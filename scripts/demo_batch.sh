#!/usr/bin/env bash
# Batch jobs' part of `make demo` (called by scripts/demo.sh after the family demos; under a minute):
# write a job file with a few dozen items of every kind whose model is in the served directory (text,
# decode + grid, gan_grid, stylize), run it with `genserve batch run` against the running server, show the
# results file, then run the same command again to show that finished items are skipped.
#
#   MODELS_DIR=models OUT_DIR=out GENSERVE_TARGET=127.0.0.1:8500 bash scripts/demo_batch.sh
#
# Knobs: BATCH_TEXT_ITEMS (24), BATCH_TEXT_LENGTH (TEXT_LENGTH, else 200), BATCH_GRIDS (8),
# BATCH_STYLE_ITERATIONS (1), STYLE_EVALS (10), STYLE_HEIGHT (160).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${MODELS_DIR:?set MODELS_DIR}" "${OUT_DIR:?set OUT_DIR}" "${GENSERVE_TARGET:?set GENSERVE_TARGET}"
PY=${PY:-.venv/bin/python}
GENSERVE=${GENSERVE:-.venv/bin/genserve}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
BATCH_DIR="$OUT_DIR/batch"
JOB="$OUT_DIR/batch_job.jsonl"
mkdir -p "$OUT_DIR"

KINDS=$(MODELS_DIR="$MODELS_DIR" JOB="$JOB" TEXT_ITEMS="${BATCH_TEXT_ITEMS:-24}" \
  LENGTH="${BATCH_TEXT_LENGTH:-${TEXT_LENGTH:-200}}" GRIDS="${BATCH_GRIDS:-8}" \
  ITERATIONS="${BATCH_STYLE_ITERATIONS:-1}" EVALS="${STYLE_EVALS:-10}" HEIGHT="${STYLE_HEIGHT:-160}" \
  IMAGES="$PWD/examples/images" "$PY" - <<'EOF'
import json, os
from pathlib import Path

env = os.environ
served = {p.name for p in Path(env["MODELS_DIR"]).iterdir() if p.is_dir()}
items = []
if "text" in served:
    seeds = ["to be, or not to be, that is the question", "now is the winter of our discontent",
             "all the world's a stage, and all the men and women merely players"]
    temps = (0.2, 0.5, 1.0, 1.2)
    items += [{"id": f"text-{i:02d}", "kind": "text", "seed_text": seeds[i % 3], "length": int(env["LENGTH"]),
               "temperature": temps[i % 4], "seed": i, "replace_unknown": " "}
              for i in range(int(env["TEXT_ITEMS"]))]
if "vae" in served:
    items += [{"id": f"grid-{i}", "kind": "grid", "n": 5 + i, "scale": 2} for i in range(int(env["GRIDS"]))]
    items += [{"id": f"walk-{i}", "kind": "decode", "points": [[-2 + 0.5 * k, -1 + 0.5 * i] for k in range(9)],
               "scale": 2} for i in range(5)]
if "gan" in served:
    items += [{"id": f"digits-{i}", "kind": "gan_grid", "n": 6, "seed": 100 * i, "scale": 2} for i in range(4)]
if "style" in served:
    for name in ("chelsea-cat", "van-gogh-village-street-auvers"):  # both share the style image
        items.append({"id": f"style-{name}", "kind": "stylize", "content": f"{env['IMAGES']}/{name}.jpg",
                      "style": f"{env['IMAGES']}/hokusai-great-wave.jpg", "height": int(env["HEIGHT"]),
                      "iterations": int(env["ITERATIONS"]), "evals_per_iteration": int(env["EVALS"])})
Path(env["JOB"]).write_text("".join(json.dumps(item) + "\n" for item in items))
print(" ".join(sorted({item["kind"] for item in items})) or "none")
EOF
)
echo "job: $(wc -l <"$JOB") items ($KINDS) in $JOB"
"$GENSERVE" batch run "$JOB" --out "$BATCH_DIR" --target "$GENSERVE_TARGET" --dry-run | head -n 6

start=$(date +%s)
"$GENSERVE" batch run "$JOB" --out "$BATCH_DIR" --target "$GENSERVE_TARGET" --concurrency 2
echo "ran in $(( $(date +%s) - start )) s; the first records of $BATCH_DIR/results.jsonl:"
head -n 2 "$BATCH_DIR/results.jsonl"
"$PY" - "$BATCH_DIR/results.jsonl" <<'EOF'
import collections, json, sys
records = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
by_kind = collections.Counter((r["kind"], r["status"]) for r in records)
print("records:", ", ".join(f"{k} {s}: {n}" for (k, s), n in sorted(by_kind.items())))
EOF
echo "again (resume: everything already ok is skipped):"
"$GENSERVE" batch run "$JOB" --out "$BATCH_DIR" --target "$GENSERVE_TARGET" --quiet
echo "batch: $BATCH_DIR/ (one file per item) and $BATCH_DIR/results.jsonl"
