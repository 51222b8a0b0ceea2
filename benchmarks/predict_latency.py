"""Round-trip time of a 1-element float32 Predict on loopback: genserve's thin client vs Google's stub.

    .venv/bin/python benchmarks/predict_latency.py [--calls 200] [--target HOST:PORT]

Without --target it exports the toy model (y = 2x + b) into a temporary directory and serves it with the
embedded server in this process. Each measured call builds its request from a numpy array and decodes
the reply back to numpy, as an application would; the median over `--calls` calls (after 20 warm-up
calls) is printed for both clients.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import nullcontext

import numpy as np


def _median_ms(fn, calls: int) -> float:
    for _ in range(20):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--target", help="an already running server with the toy model")
    args = parser.parse_args()

    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from genserve.clients.core import Client
    from genserve.export.toy import export_toy
    from genserve.serving.server import serve

    x = np.array([[3.0]], np.float32)  # (1, 1): one float32 element
    with tempfile.TemporaryDirectory() as tmp:
        if args.target:
            context = nullcontext(args.target)
        else:
            export_toy(tmp)
            context = serve(tmp, poll_seconds=0)
        with context as target, Client(target, timeout=10) as client, \
                grpc.insecure_channel(target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

            def genserve_call():
                return client.predict("toy", {"x": x})["y"]

            def google_call():
                request = predict_pb2.PredictRequest()
                request.model_spec.name = "toy"
                request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
                return tf.make_ndarray(stub.Predict(request, timeout=10).outputs["y"])

            assert float(genserve_call()[0, 0]) == float(google_call()[0, 0])
            ours = _median_ms(genserve_call, args.calls)
            google = _median_ms(google_call, args.calls)
    print(f"1-element float32 Predict, median of {args.calls} calls, target {target}:")
    print(f"  genserve client (codec, no TF)             {ours:7.3f} ms")
    print(f"  Google stub (tf.make_tensor_proto/ndarray)  {google:7.3f} ms")
    print(f"  ratio google/genserve                       {google / ours:7.2f}")


if __name__ == "__main__":
    main()
