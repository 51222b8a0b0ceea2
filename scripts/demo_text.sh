#!/usr/bin/env bash
# Text family's part of `make demo` (called by scripts/demo.sh; ~2-3 minutes on 2 CPU cores):
# train a quick char-LSTM on 400,000 characters of Shakespeare (2 epochs), export it into the served
# directory, wait until the running server loads that version, generate 400 characters at the book's
# four temperatures and write the text, its JSON, the temperature figure and the loss history to OUT_DIR.
#
#   MODELS_DIR=models OUT_DIR=out WORK_DIR=out/work GENSERVE_TARGET=127.0.0.1:8500 bash scripts/demo_text.sh
#
# Knobs: TEXT_CORPUS (shakespeare, or a UTF-8 file), TEXT_MAX_CHARS (400000), TEXT_EPOCHS (2),
# TEXT_LENGTH (400).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/demo_lib.sh

train_and_export text "${TEXT_MAX_CHARS:-400000} characters of ${TEXT_CORPUS:-shakespeare}, ${TEXT_EPOCHS:-2} epochs" \
  --corpus "${TEXT_CORPUS:-shakespeare}" --max-chars "${TEXT_MAX_CHARS:-400000}" \
  --epochs "${TEXT_EPOCHS:-2}"

"$GENSERVE" generate --target "$GENSERVE_TARGET" --model text --version "$version" \
  --length "${TEXT_LENGTH:-400}" --seed 42 --json "$OUT_DIR/text_generation.json" \
  | tee "$OUT_DIR/text_generation.txt"
"$GENSERVE" plot temperatures --out "$OUT_DIR/text_temperatures.png"
cp "$WORK/history.csv" "$OUT_DIR/text_history.csv"
echo "text: $OUT_DIR/text_generation.txt, text_generation.json, text_temperatures.png, text_history.csv"
echo "total $(( $(date +%s) - start )) s"
