#!/usr/bin/env bash
# Every install the README shows, in throwaway venvs: `pip install .` (the thin client) and
# `pip install '.[client]'` (+ the command line), against a real `genserve serve` run from .venv.
#
#     bash scripts/check_installs.sh          # `make check-installs`; CI runs it after `make test`
#
# Base: every command prints the one line naming the 'client' extra (exit 1); the thin client
# (genserve.clients) answers a Predict. [client]: --help, `genserve generate` against the server, and
# the TF commands' one-line refusal naming the 'tf' extra. pip's download cache (~/.cache/pip, or
# $PIP_CACHE_DIR) is used, so a rerun installs from it; the checkout is built into a wheel once and
# both venvs install that wheel (what `pip install .` does, without two builds in the same tree).
# Prints each check; the first failure prints the command's output and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PY=${PY:-.venv/bin/python}  # the full install that serves the models
ROOT=build/check-installs
started=$SECONDS

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "== $* ($((SECONDS - started)) s)"; }

rm -rf "$ROOT"
mkdir -p "$ROOT/dist" "$ROOT/src"
step "building the wheel of this checkout"
# From a copy of the checkout's files (tracked and new, not ignored): setuptools builds in the tree.
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$ROOT/src" 2>/dev/null || true
"$PY" -m pip wheel --quiet --no-deps --wheel-dir "$ROOT/dist" "$ROOT/src" >/dev/null
WHEEL=$(ls "$ROOT"/dist/genserve-*.whl)

step "installing base and [client] venvs (in parallel)"
install() {  # install NAME SPEC
    "$PYTHON" -m venv "$ROOT/$1" && "$ROOT/$1/bin/python" -m pip install --quiet "$2" >"$ROOT/$1.log" 2>&1 \
        || { cat "$ROOT/$1.log" >&2; return 1; }
}
install base "$WHEEL" & base_pid=$!
install client "genserve[client] @ file://$PWD/$WHEEL" & client_pid=$!
server_pid=
trap 'kill $base_pid $client_pid $server_pid 2>/dev/null || true' EXIT

# Meanwhile the server: the toy model (`genserve export toy`'s function) and a tiny untrained text
# model, in one process (one TensorFlow start-up).
MODELS=$ROOT/models
if "$PY" - "$MODELS" "$ROOT/text-work" 2>"$ROOT/export.log" <<'EOF'
from genserve.cli.quiet import install_quiet
install_quiet()
import dataclasses, sys
from benchmarks.harness import export_untrained_text
from genserve.export.toy import ToyConfig, export_toy
from genserve.training.text import TextConfig
export_toy(sys.argv[1], ToyConfig())
export_untrained_text(sys.argv[1], sys.argv[2], dataclasses.replace(TextConfig(), maxlen=12, units=16),
                      alphabet="the quick brown fox jumps over the lazy dog.\n")
EOF
then :; else cat "$ROOT/export.log" >&2; fail "exporting the models with $PY"; fi
"$PY" -m genserve serve --models-dir "$MODELS" --port 0 --poll-seconds 0 >"$ROOT/serve.out" 2>"$ROOT/serve.err" &
server_pid=$!
for _ in $(seq 900); do  # until the banner (printed once every model is loaded), at most 3 min
    grep -q "^serving" "$ROOT/serve.out" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$ROOT/serve.err" >&2; fail "genserve serve exited"; }
    sleep 0.2
done
TARGET=$(grep -o '127\.0\.0\.1:[0-9]*' "$ROOT/serve.out" | head -1)
[ -n "$TARGET" ] || fail "no banner from genserve serve: $(cat "$ROOT/serve.out" "$ROOT/serve.err")"
step "server from $PY on $TARGET: $(head -1 "$ROOT/serve.out")"

wait "$base_pid" || fail "pip install $WHEEL"
wait "$client_pid" || fail "pip install 'genserve[client]'"
step "installed"

# expect_refusal EXTRA VENV COMMAND...: exit 1, nothing on stdout, one stderr line naming the extra.
expect_refusal() {
    local extra=$1 venv=$2; shift 2
    local rc=0
    "$ROOT/$venv/bin/$1" "${@:2}" >"$ROOT/out" 2>"$ROOT/err" </dev/null || rc=$?
    if [ "$rc" != 1 ] || [ -s "$ROOT/out" ] || [ "$(wc -l <"$ROOT/err")" != 1 ] \
            || ! grep -qF "pip install 'genserve[$extra]'" "$ROOT/err"; then
        echo "--- exit $rc; stdout:"; cat "$ROOT/out"; echo "--- stderr:"; cat "$ROOT/err"
        fail "[$venv] $* should print one line naming 'genserve[$extra]' and exit 1"
    fi
    echo "ok [$venv] $*: $(cat "$ROOT/err")"
}
# expect_ok VENV PATTERN COMMAND...: exit 0 and PATTERN in stdout.
expect_ok() {
    local venv=$1 pattern=$2; shift 2
    local rc=0
    "$ROOT/$venv/bin/$1" "${@:2}" >"$ROOT/out" 2>"$ROOT/err" </dev/null || rc=$?
    if [ "$rc" != 0 ] || ! grep -q "$pattern" "$ROOT/out"; then
        echo "--- exit $rc; stdout:"; cat "$ROOT/out"; echo "--- stderr:"; cat "$ROOT/err"
        fail "[$venv] $* should exit 0 and print '$pattern'"
    fi
    echo "ok [$venv] $*"
}

step "base: pip install . (thin client)"
expect_refusal client base genserve --help
expect_refusal client base python -m genserve --help
expect_refusal client base genserve generate --target "$TARGET"
expect_refusal client base genserve train text
cat >"$ROOT/thin_client.py" <<'EOF'
import sys
import numpy as np
from genserve.clients import Client
with Client(sys.argv[1]) as client:  # the README's thin client: y = 2x + 1 from the toy model
    y = client.predict("toy", {"x": np.ones((1, 1), np.float32)}, signature="affine")["y"]
assert "tensorflow" not in sys.modules
print("answer", float(y[0, 0]))
EOF
expect_ok base "answer 3.0" python "$ROOT/thin_client.py" "$TARGET"

step "[client]: pip install '.[client]'"
expect_ok client "Usage: genserve" genserve --help
expect_ok client "temperature" genserve generate --target "$TARGET" --seed-text "the quick" --length 8 -t 0.5
expect_ok client "^toy" genserve models --models-dir "$MODELS"  # lists a folder: no TF Serving protos
expect_refusal tf client genserve train text
expect_refusal tf client genserve export toy --models-dir "$ROOT/refused"
expect_refusal tf client genserve serve --models-dir "$MODELS"

step "all install checks passed"
