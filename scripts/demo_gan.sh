#!/usr/bin/env bash
# GAN family's part of `make demo` (called by scripts/demo.sh; about 2 minutes on 2 CPU cores):
# train a small DCGAN on MNIST (offline: MNIST comes from a pinned PyPI wheel) for GAN_EPOCHS epochs
# of GAN_TRAIN_LIMIT images, export the generator into the served directory, wait until the running
# server loads that version, then sample a 10x10 grid of digits in ONE request (`gan-grid`, the
# random draw made on the server by seed) and a seed-to-seed interpolation strip (`gan-interpolate`).
# The per-epoch sample grids stay in the workdir. Results go to OUT_DIR.
#
#   MODELS_DIR=models OUT_DIR=out WORK_DIR=out/work GENSERVE_TARGET=127.0.0.1:8500 bash scripts/demo_gan.sh
#
# Knobs: GAN_TRAIN_LIMIT (60000), GAN_EPOCHS (2), GAN_DATASET (default: VAE_DATASET, else mnist), GAN_EVAL (0; 1 also runs
# `genserve eval gan`, which trains the evaluation classifier once, ~1-3 minutes, if it is not cached).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/demo_lib.sh
DATASET=${GAN_DATASET:-${VAE_DATASET:-mnist}}  # the MNIST families share a dataset unless told apart

train_and_export gan "first ${GAN_TRAIN_LIMIT:-60000} $DATASET images, ${GAN_EPOCHS:-2} epoch(s)" \
  --dataset "$DATASET" --train-limit "${GAN_TRAIN_LIMIT:-60000}" \
  --epochs "${GAN_EPOCHS:-2}"

"$GENSERVE" gan-grid --target "$GENSERVE_TARGET" --model gan --version "$version" --n 10 --seed 0 \
  --scale 2 -o "$OUT_DIR/gan_grid.png"
"$GENSERVE" gan-interpolate --target "$GENSERVE_TARGET" --model gan --version "$version" \
  --seed-a 0 --seed-b 1 --steps 10 --scale 2 -o "$OUT_DIR/gan_interpolation.png"
cp "$WORK/state.json" "$OUT_DIR/gan_history.json"
if [ "${GAN_EVAL:-0}" = 1 ]; then
  "$GENSERVE" eval gan --workdir "$WORK" --json "$OUT_DIR/gan_eval.json" | tee "$OUT_DIR/gan_eval.txt"
fi
echo "gan: $OUT_DIR/gan_grid.png, gan_interpolation.png, gan_history.json; per-epoch grids in $WORK/samples/"
echo "total $(( $(date +%s) - start )) s"
