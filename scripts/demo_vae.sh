#!/usr/bin/env bash
# VAE family's part of `make demo` (called by scripts/demo.sh; about 2 minutes on 2 CPU cores):
# train the book's convolutional VAE on the first 20,000 MNIST training images for 2 epochs (offline:
# MNIST comes from a pinned PyPI wheel), export it into the served directory, wait until the running
# server loads that version, then draw the 15x15 latent grid in ONE request, place the 10,000 test
# digits in latent space, and evaluate the test-set negative ELBO. Results go to OUT_DIR.
#
#   MODELS_DIR=models OUT_DIR=out WORK_DIR=out/work GENSERVE_TARGET=127.0.0.1:8500 bash scripts/demo_vae.sh
#
# Knobs: VAE_TRAIN_LIMIT (20000), VAE_EPOCHS (2), VAE_DATASET (mnist; fashion needs dataset-fashion-mnist).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/demo_lib.sh
DATASET=${VAE_DATASET:-mnist}

train_and_export vae "first ${VAE_TRAIN_LIMIT:-20000} $DATASET images, ${VAE_EPOCHS:-2} epochs, validation on 2,000 test images" \
  --dataset "$DATASET" --train-limit "${VAE_TRAIN_LIMIT:-20000}" --test-limit 2000 \
  --epochs "${VAE_EPOCHS:-2}"

"$GENSERVE" grid --target "$GENSERVE_TARGET" --model vae --version "$version" --n 15 --out "$OUT_DIR/vae_grid.png"
"$GENSERVE" encode --target "$GENSERVE_TARGET" --model vae --version "$version" --dataset "$DATASET" \
  --out "$OUT_DIR/vae_scatter.png"
"$GENSERVE" eval vae --workdir "$WORK" --json "$OUT_DIR/vae_eval.json" | tee "$OUT_DIR/vae_eval.txt"
cp "$WORK/state.json" "$OUT_DIR/vae_history.json"
echo "vae: $OUT_DIR/vae_grid.png, vae_scatter.png, vae_eval.txt, vae_eval.json, vae_history.json"
echo "total $(( $(date +%s) - start )) s"
