"""Round-trip latency on loopback: the gRPC floor, genserve's text `step`, and the two clients.

    .venv/bin/python benchmarks/predict_latency.py [--calls 300] [--skip-text]

One run, side by side, every server in its own process (as a real deployment has it):
1. the floor: a bare gRPC unary echo of a 1.1 KB message (Python grpcio on both ends, no protobuf);
2. genserve's text `step` (batch 1, book size: LSTM 128) round trip through `genserve serve`, and the
   same signature run in this process on TF Serving's path (graph Session, make_callable);
   goal (issue 8): step round trip <= 1.25 x (echo floor + in-process step); and the bound for any
   Python gRPC server: the same echo server running the step on its handler thread before answering;
   and genserve's server called as the echo is (serialized request in, bytes out: no client codec);
3. a 1-element float32 toy Predict: genserve's thin client vs Google's tensorflow_serving stub;
4. client-side text generation over the same server, 400 characters at the book's four temperatures:
   the book's way (one `next_char` request on a 60-character window per character per temperature,
   1,600 requests) vs genserve's (one `prime`, then one batched `step` per character for all four
   temperatures); goal (issue 8): >= 10x.
Medians over `--calls` calls after 30 warm-up calls; calls of the compared kinds are interleaved in
rounds so a burst of load from other processes hits them alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.harness import ServerProcess, rounds  # noqa: E402
# argv: [repository root] a bare echo; [root, SavedModel of the text model]: each call also runs that
# model's `step` (batch 1) on the handler thread before echoing, the best any Python gRPC server can do
# for a step round trip; [..., "minimal"]: TF Serving's Predict for `step` doing only what any Python
# server must (step_ab.py's minimal server): read the request with genserve's wire code
# (predict_bytes.Templates, protobuf for a new layout), run the step with the request's deadline, write
# the reply (predict_bytes.response_bytes); none of genserve's lookups, checks, admission or metrics.
# Every one of them runs its handlers on genserve's thread pool (hot_pool.HotThreadPool).
ECHO_SERVER = r"""
import sys
sys.path.insert(0, sys.argv[1])
import grpc
from genserve.serving.hot_pool import HotThreadPool
service, method, handle = "bench.Echo", "Echo", lambda request, context: request
if len(sys.argv) > 2:
    import numpy as np
    from genserve.serving.loader import load_saved_model
    model = load_saved_model(sys.argv[2])
    step = model.signatures["step"]
    if sys.argv[3:] == ["minimal"]:
        from genserve.wire.predict_bytes import Templates, response_bytes
        from genserve.wire.protos import serving_pb2
        keys = tuple(sorted(step.outputs))
        tail = serving_pb2.PredictResponse(model_spec={"name": "text", "signature_name": "step"}).SerializeToString()
        requests = Templates(2, "inputs")
        def handle(raw, context):
            arrays = requests.read_or_learn(raw, serving_pb2.PredictRequest.FromString)[1]
            result = step.run(arrays, keys, int(context.time_remaining() * 1000))
            return response_bytes([(key, result[key]) for key in keys], tail)
        service, method = "tensorflow.serving.PredictionService", "Predict"
    else:
        units = int(model.signatures["info"].run({"ids": np.zeros(1, np.int32)})["units"][0])
        feed = {"ids": np.zeros(1, np.int32), "h": np.zeros((1, units), np.float32),
                "c": np.zeros((1, units), np.float32)}
        def handle(request, context):
            step.run(feed)
            return request
handler = grpc.method_handlers_generic_handler(service, {method: grpc.unary_unary_rpc_method_handler(handle)})
server = grpc.server(HotThreadPool(4))
server.add_generic_rpc_handlers((handler,))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
server.wait_for_termination()
"""


def _generation(client, length: int) -> dict:
    """Seconds for the book's window-per-character generation vs prime + batched steps (same server)."""
    from genserve.clients.text import BOOK_TEMPERATURES, TextModel, generate, sample_next

    model = TextModel(client)
    info = model.info
    seed_text = "to be, or not to be, that is the question: whether 'tis nobler in the mind to suffer"
    seed_ids = model.encode(seed_text, replace_unknown=" ")[-info.maxlen:]  # (maxlen,)
    temps = np.array(BOOK_TEMPERATURES)

    def book():
        rng = np.random.default_rng(0)
        for t in temps:  # one request per character per temperature, the window re-run each time
            window = seed_ids.copy()
            for _ in range(length):
                nxt = sample_next(model.next_char(window[None, :]), np.array([t]), rng)[0]
                window = np.append(window[1:], nxt)

    def ours():
        generate(model, seed_text, length=length, temperatures=temps, seed=0, replace_unknown=" ")

    out = {}
    for name, fn in (("book", book), ("ours", ours)):
        before = model.requests
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out[name] = statistics.median(times)
        out[f"{name}_requests"] = (model.requests - before) // 3
    return out


def measure(calls: int = 300, length: int = 400, skip_text: bool = False, server_args: str = "") -> dict:
    """The floor measurements, servers started and stopped here. Returns {"ms": median ms per call kind
    ("echo", "toy_genserve", "toy_google"; with the text model also "step_in_process", "step_grpc"),
    "gen": _generation's seconds (absent with skip_text), "step_ratio", "gen_ratio"}."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from genserve.clients import Client
    from genserve.clients.messages import predict_request
    from genserve.export.toy import export_toy

    tmp = Path(tempfile.mkdtemp(prefix="genserve-bench-latency-"))
    models = tmp / "models"
    export_toy(models)
    if not skip_text:
        from genserve.export.text import export_text
        from genserve.training.text import TextConfig, train

        text = ("to be, or not to be, that is the question: whether 'tis nobler in the mind to suffer "
                "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles\n")
        # The book's size (maxlen 60, LSTM 128); a few training steps only: latency, not quality.
        train(TextConfig(epochs=1), tmp / "text", verbose=0, log=lambda line: None, text=text * 40)
        text_path = export_text(tmp / "text", models)

    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(ROOT)], stdout=subprocess.PIPE, text=True)
    step_echo = None if skip_text else subprocess.Popen(
        [sys.executable, "-c", ECHO_SERVER, str(ROOT), str(text_path)], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    minimal = None if skip_text else subprocess.Popen(
        [sys.executable, "-c", ECHO_SERVER, str(ROOT), str(text_path), "minimal"], stdout=subprocess.PIPE,
        text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    # The toy export carries batching params: no 2 ms batch wait here.
    server = ServerProcess(models, "--disable-batching", *server_args.split(), poll_seconds=0).start()
    target = server.target
    gen = minimal_client = None
    try:
        server.wait_ready("toy", *(() if skip_text else ("text",)))  # the ports open before models load
        echo_target = f"127.0.0.1:{echo.stdout.readline().strip()}"
        payload = os.urandom(1100)
        with grpc.insecure_channel(echo_target) as echo_channel, Client(target, timeout=10) as client, \
                grpc.insecure_channel(target) as channel:
            echo_call = echo_channel.unary_unary("/bench.Echo/Echo")
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            x = np.array([[3.0]], np.float32)

            def google_call():
                request = predict_pb2.PredictRequest()
                request.model_spec.name = "toy"
                request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
                return tf.make_ndarray(stub.Predict(request, timeout=10).outputs["y"])

            fns = {"echo": lambda: echo_call(payload, timeout=10),
                   "toy_genserve": lambda: client.predict("toy", {"x": x})["y"],
                   "toy_google": google_call}
            if not skip_text:
                from genserve.serving.loader import load_saved_model

                graph = load_saved_model(text_path)
                units = int(graph.signatures["info"].run({"ids": np.zeros(1, np.int32)})["units"][0])
                h = np.zeros((1, units), np.float32)
                ids = np.zeros(1, np.int32)
                step = graph.signatures["step"]
                fns["step_in_process"] = lambda: step.run({"ids": ids, "h": h, "c": h})
                fns["step_grpc"] = lambda: client.predict("text", {"ids": ids, "h": h, "c": h},
                                                          signature="step")
                step_echo_channel = grpc.insecure_channel(f"127.0.0.1:{step_echo.stdout.readline().strip()}")
                step_echo_call = step_echo_channel.unary_unary("/bench.Echo/Echo")
                step_body = predict_request("text", {"ids": ids, "h": h, "c": h}, "step").SerializeToString()
                fns["step_echo"] = lambda: step_echo_call(step_body, timeout=10)
                # the least a Python server must do (decode, run, encode) with genserve's client
                minimal_client = Client(f"127.0.0.1:{minimal.stdout.readline().strip()}", timeout=10)
                fns["step_minimal"] = lambda: minimal_client.predict("text", {"ids": ids, "h": h, "c": h},
                                                                     signature="step")
                # genserve's server with the echo's client (raw bytes, no codec): splits the gap
                # between step_grpc and step_echo into the client's share and the server's.
                raw_predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
                fns["step_raw"] = lambda: raw_predict(step_body, timeout=10)
            ms = rounds(fns, calls)
            if not skip_text:
                gen = _generation(client, length)
    finally:
        if minimal_client is not None:
            minimal_client.close()
        server.stop()
        for process in (echo, step_echo, minimal):
            if process is not None:
                process.terminate()
                process.wait(30)
    out = {"ms": ms, "gen": gen}
    if gen is not None:
        out["step_ratio"] = ms["step_grpc"] / (ms["echo"] + ms["step_in_process"])
        out["step_echo_ratio"] = ms["step_echo"] / (ms["echo"] + ms["step_in_process"])
        out["step_minimal_ratio"] = ms["step_minimal"] / (ms["echo"] + ms["step_in_process"])
        out["gen_ratio"] = gen["book"] / gen["ours"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--length", type=int, default=400, help="characters per temperature (generation)")
    parser.add_argument("--skip-text", action="store_true", help="only the echo floor and the toy model")
    parser.add_argument("--server-args", default="", help="extra `genserve serve` flags, e.g. "
                        "'--tensorflow-intra-op-parallelism 1'")
    args = parser.parse_args()
    result = measure(args.calls, args.length, args.skip_text, args.server_args)
    ms, gen = result["ms"], result["gen"]

    print(f"loopback latency, median of {args.calls} calls each, servers in their own processes:")
    print(f"  gRPC echo floor (1.1 KB, bytes only)          {ms['echo']:7.3f} ms")
    if "step_grpc" in ms:
        print(f"  text step in process (graph Session)          {ms['step_in_process']:7.3f} ms")
        print(f"  text step over gRPC (genserve serve)          {ms['step_grpc']:7.3f} ms")
        print(f"  ratio step / (echo + in-process step)         {result['step_ratio']:7.2f}   (goal <= 1.25)")
        print(f"  echo server running the step per call         {ms['step_echo']:7.3f} ms")
        print(f"  ratio of that bare server (the bound)         {result['step_echo_ratio']:7.2f}")
        print(f"  minimal server (decode, run, encode), genserve client {ms['step_minimal']:7.3f} ms"
              f" = {result['step_minimal_ratio']:.2f}")
        print(f"  genserve serve, raw bytes (no client codec)   {ms['step_raw']:7.3f} ms")
    if not args.skip_text:
        print(f"client-side generation, {args.length} chars x 4 temperatures, median of 3:")
        print(f"  the book's way, {gen['book_requests']:,} window requests      {gen['book']:7.3f} s")
        print(f"  prime + batched steps, {gen['ours_requests']:,} requests        {gen['ours']:7.3f} s")
        print(f"  ratio                                         {result['gen_ratio']:7.1f}x  (goal >= 10)")
    print(f"  toy Predict, genserve client (codec, no TF)   {ms['toy_genserve']:7.3f} ms")
    print(f"  toy Predict, Google stub (make_tensor_proto)  {ms['toy_google']:7.3f} ms")
    print(f"  ratio google/genserve                         {ms['toy_google'] / ms['toy_genserve']:7.2f}")


if __name__ == "__main__":
    main()
