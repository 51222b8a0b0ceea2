#!/usr/bin/env bash
# Regenerate the committed *_pb2.py modules from the .proto files in this folder.
#
#     genserve/wire/protos/regenerate.sh            # in place
#     genserve/wire/protos/regenerate.sh /tmp/out   # into another root (tests compare the bytes)
#
# Pinned generator: grpcio-tools==1.75.1 (bundled protoc 31.1). Its output imports on the protobuf
# 6.31+ runtime that TensorFlow 2.21 needs and on protobuf 7; code from grpcio-tools 1.85 (protoc 33,
# protobuf 7) refuses to import on 6.x. Use `python -m grpc_tools.protoc`, which adds the bundled
# include path for google/protobuf/*.proto (grpc_tools.protoc.main() from a script does not).
# PYTHON defaults to the project's .venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
out="${1:-$root}"
python="${PYTHON:-$root/.venv/bin/python}"
mkdir -p "$out"
cd "$root"
"$python" -m grpc_tools.protoc --proto_path=. --python_out="$out" \
  genserve/wire/protos/tensor.proto genserve/wire/protos/serving.proto \
  genserve/wire/protos/model_server_config.proto
