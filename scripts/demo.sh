#!/usr/bin/env bash
# `make demo`: everything genserve can do, on a laptop without a GPU.
#
# Starts the embedded TF-Serving-compatible server over models/ (MODELS_DIR: `genserve serve`'s default,
# the folder README.md and docs/ use), then runs each model family's demo script
# (scripts/demo_<family>.sh): train a quick model, export it into the served directory (the server
# picks new versions up while running), query it with the thin clients, write results to out/.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
GENSERVE=${GENSERVE:-.venv/bin/genserve}
export OUT_DIR=${OUT_DIR:-$PWD/out}
export MODELS_DIR=${MODELS_DIR:-$PWD/models}
export WORK_DIR=${WORK_DIR:-$OUT_DIR/work}
export PY GENSERVE
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}  # TensorFlow start-up chatter off; errors stay
mkdir -p "$OUT_DIR" "$MODELS_DIR" "$WORK_DIR"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "export the toy model (y = 2x + b) into $MODELS_DIR"
"$GENSERVE" export toy --models-dir "$MODELS_DIR"

read -r PORT REST_PORT < <("$PY" -c 'import socket; a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0)); print(a.getsockname()[1], b.getsockname()[1])')
export GENSERVE_TARGET="127.0.0.1:$PORT" GENSERVE_REST="127.0.0.1:$REST_PORT"
step "start the embedded server on $GENSERVE_TARGET (gRPC) and $GENSERVE_REST (REST, metrics; log: $OUT_DIR/server.log)"
"$GENSERVE" serve --models-dir "$MODELS_DIR" --port "$PORT" --poll-seconds 1 --rest-port "$REST_PORT" \
  --monitoring-config-file genserve/deploy/monitoring.config >"$OUT_DIR/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null || true' EXIT
"$PY" scripts/wait_for_model.py "$GENSERVE_TARGET" toy --timeout 120

step "query it with Google's own tensorflow_serving.apis stubs"
"$PY" examples/tf_serving_stub_client.py "$GENSERVE_TARGET"

step "the same server speaks TF Serving's REST API, with Prometheus metrics"
if command -v curl >/dev/null; then
  curl -sS --fail -d '{"signature_name": "affine", "instances": [[1.0], [2.0]]}' \
    "http://$GENSERVE_REST/v1/models/toy:predict"
  echo
  curl -sS --fail "http://$GENSERVE_REST/monitoring/prometheus/metrics" | grep '^:tensorflow:serving:request_count'
else
  echo "(curl is not installed: REST step skipped)"
fi

step "the thin client imports without TensorFlow"
"$PY" benchmarks/client_import.py --runs 3 --skip-footprint

for family in text vae style dream gan batch; do
  script="scripts/demo_$family.sh"
  if [ -f "$script" ]; then
    step "$family"
    bash "$script"
  fi
done

step "done: results are in $OUT_DIR"
ls -1 "$OUT_DIR"
printf '\nplay with these models in a browser (then open http://127.0.0.1:7860):\n  %s serve --models-dir %s --port 8500 &\n  %s playground --target 127.0.0.1:8500\n' "$GENSERVE" "$MODELS_DIR" "$GENSERVE"
