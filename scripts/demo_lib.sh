# Shared by the family demo scripts (scripts/demo_<family>.sh), sourced after `cd` to the repository:
# the environment every part needs and the "export, then wait until the running server serves it" step.
#
#   source scripts/demo_lib.sh; export_and_wait vae --workdir "$WORK"   # sets $version

: "${MODELS_DIR:?set MODELS_DIR}" "${OUT_DIR:?set OUT_DIR}" "${GENSERVE_TARGET:?set GENSERVE_TARGET}"
WORK_DIR=${WORK_DIR:-$OUT_DIR/work}
PY=${PY:-.venv/bin/python}
GENSERVE=${GENSERVE:-.venv/bin/genserve}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
mkdir -p "$OUT_DIR"
start=$(date +%s)

# export_and_wait FAMILY [export options...]: export into $MODELS_DIR, print the export line and its
# time, set $version, and wait (up to 120 s) until the server at $GENSERVE_TARGET serves that version.
export_and_wait() {
  local family=$1 exported
  shift
  exported=$("$GENSERVE" export "$family" "$@" --models-dir "$MODELS_DIR" | tail -n 1)
  echo "$exported ($(( $(date +%s) - start )) s)"
  version=$(basename "${exported#exported }")
  "$PY" scripts/wait_for_model.py "$GENSERVE_TARGET" "$family" --timeout 120 --min-version "$version"
}

# train_and_export FAMILY "what" [train options...]: `genserve train FAMILY` into $WORK_DIR/FAMILY (quietly),
# print how long it took, then export_and_wait from that workdir (sets $version).
train_and_export() {
  local family=$1 what=$2
  shift 2
  WORK="$WORK_DIR/$family"
  mkdir -p "$WORK"
  echo "train: $what -> $WORK"
  "$GENSERVE" train "$family" "$@" --workdir "$WORK" --quiet
  echo "trained in $(( $(date +%s) - start )) s"
  export_and_wait "$family" --workdir "$WORK"
}
