"""Query a genserve (or TensorFlow Serving) server with nothing but Google's own client stubs.

    python examples/tf_serving_stub_client.py 127.0.0.1:8500

Serves as proof that the embedded server speaks TF Serving's protocol: this script talks to it only
through `tensorflow` and `tensorflow_serving.apis`, sends a Predict for the toy model (y = 2x + b) and a
GetModelMetadata, and checks the answers. Exit code 0 when the answers are right. The one genserve
import hides TensorFlow's and gRPC's start-up log lines (GENSERVE_VERBOSE=1 keeps them).
"""

from __future__ import annotations

import sys

from genserve.cli.quiet import install_quiet

install_quiet()  # before grpc and tensorflow load

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc  # noqa: E402


def main(target: str) -> int:
    x = np.array([[0.0], [1.5], [-2.0]], dtype=np.float32)
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "toy"
        request.model_spec.signature_name = "affine"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
        response = stub.Predict(request, timeout=10.0)
        y = tf.make_ndarray(response.outputs["y"])
        wx = tf.make_ndarray(response.outputs["wx"])
        bias = float(y[0, 0] - wx[0, 0])
        print(f"toy version {response.model_spec.version.value}: x={x.ravel().tolist()} "
              f"-> y={y.ravel().tolist()} (w*x={wx.ravel().tolist()}, b={bias:g})")

        meta_request = get_model_metadata_pb2.GetModelMetadataRequest()
        meta_request.model_spec.name = "toy"
        meta_request.metadata_field.append("signature_def")
        meta = stub.GetModelMetadata(meta_request, timeout=10.0)
        sigs = get_model_metadata_pb2.SignatureDefMap()
        meta.metadata["signature_def"].Unpack(sigs)
        print("signatures:", ", ".join(sorted(sigs.signature_def)))

    ok = np.allclose(wx, 2.0 * x) and np.allclose(y, wx + bias) and "affine" in sigs.signature_def
    print("answers are correct" if ok else "error: unexpected answers", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python examples/tf_serving_stub_client.py HOST:PORT (a server's gRPC port)", file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(main(sys.argv[1]))
    except grpc.RpcError as e:  # one line, as the genserve commands answer: the status and its message
        print(f"error: {e.code().name}: {e.details()} (is a gRPC server at {sys.argv[1]}?)", file=sys.stderr)
        sys.exit(1)
