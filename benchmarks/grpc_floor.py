"""gRPC throughput against its floor: genserve servers (any code versions) beside a bare echo server with
genserve's threading model, VAE `decode` with z of (1, 2) from N client threads, interleaved rounds.

    .venv/bin/python benchmarks/grpc_floor.py        # = echo=ECHO on=. off=.+--disable-batching --clients 64
    .venv/bin/python benchmarks/grpc_floor.py old=/tmp/genserve-4f54cda new=.   # two code versions
    .venv/bin/python benchmarks/grpc_floor.py trim=. keep=.+--idle-trim-seconds,0   # the idle heap trim

Each positional argument is LABEL=SOURCE: `ECHO` starts the echo server (grpc.server over a
genserve's thread pool (hot_pool.HotThreadPool, as large), a generic handler that parses the PredictRequest and answers
a fixed, pre-serialized VAE-sized PredictResponse: what any Python gRPC server costs before it runs a
model); any other SOURCE is a genserve source tree put first on the server's PYTHONPATH, optionally
followed by `+ARG,ARG` extra `genserve serve` arguments. Per row: req/s, p50, and CPU milliseconds per
request of the server process (utime + stime from /proc, which a busy box distorts far less than
latency) and of this client process; at the end each server's RSS, --settle seconds after the
load. Same clients as peers.py (raw bytes on gRPC channels).
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
from benchmarks.harness import ServerProcess, export_untrained_vae, free_port  # noqa: E402
from benchmarks.peers import PREDICT, grpc_factory, tree_rss_mb  # noqa: E402
from benchmarks.serving_load import run_clients  # noqa: E402

ECHO_SERVER = r"""
import sys
import grpc
import numpy as np
from tensorflow_serving.apis import predict_pb2
from genserve.serving.hot_pool import HotThreadPool
from genserve.serving.options import ServerOptions
from genserve.wire.codec import fill_tensor_proto
response = predict_pb2.PredictResponse()
response.model_spec.name, response.model_spec.signature_name = "vae", "decode"
response.model_spec.version.value = 1
fill_tensor_proto(response.outputs["images"], np.zeros((1, 28, 28, 1), np.float32))
raw = response.SerializeToString()
def predict(request, context):
    predict_pb2.PredictRequest.FromString(request)
    return raw
cap = ServerOptions().max_concurrent_rpcs
server = grpc.server(HotThreadPool(cap), maximum_concurrent_rpcs=cap)
server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService",
    {"Predict": grpc.unary_unary_rpc_method_handler(predict)})])
server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
server.start()
print("ready", flush=True)
server.wait_for_termination()
"""


class EchoProcess:
    def __init__(self):
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.proc = None

    def start(self) -> "EchoProcess":
        self.proc = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(self.port)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"})
        return self

    def wait_ready(self, _model: str) -> None:
        self.proc.stdout.readline()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(label: str, source: str, models: Path):
    if source == "ECHO":
        return EchoProcess().start()
    path, _, extra = source.partition("+")
    env_before = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = str(Path(path).resolve())
    try:
        return ServerProcess(models, "--max-queue", "256", *filter(None, extra.split(",")), poll_seconds=0).start()
    finally:
        os.environ["PYTHONPATH"] = env_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("servers", nargs="*", help="LABEL=ECHO or LABEL=SOURCE_TREE[+ARG,ARG] (default: the "
                        "echo server, this tree with batching and without)",
                        default=["echo=ECHO", f"on={ROOT}", f"off={ROOT}+--disable-batching"])
    parser.add_argument("--clients", type=int, nargs="+", default=[64])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=3.0,
                        help="idle seconds after the load before each server's RSS is read (genserve hands "
                             "freed heap back after --idle-trim-seconds, 1 s by default)")
    args = parser.parse_args()
    from genserve.clients.messages import predict_request
    from genserve.training.vae import VAEConfig

    tmp = Path(tempfile.mkdtemp(prefix="genserve-grpc-floor-"))
    export_untrained_vae(tmp / "models", tmp / "vae-work", VAEConfig(), version=1)
    z = np.random.default_rng(0).standard_normal((1, VAEConfig().latent_dim), dtype=np.float32)
    body = predict_request("vae", {"z": z}, "decode").SerializeToString()
    servers = {}
    try:
        for spec in args.servers:
            label, _, source = spec.partition("=")
            servers[label] = start(label, source, tmp / "models")
        for server in servers.values():
            server.wait_ready("vae")
        rows: dict = {}
        for n in args.clients:
            for _ in range(args.rounds):
                for label, server in servers.items():
                    cpu0, own0, t0 = cpu_seconds(server.proc.pid), sum(os.times()[:2]), time.monotonic()
                    r = run_clients(grpc_factory(server.target, PREDICT, body), n, args.seconds, warmup=0.5)
                    requests = r["throughput"] * (time.monotonic() - t0)  # warm-up included, as the CPU is
                    server_ms = (cpu_seconds(server.proc.pid) - cpu0) * 1e3 / max(1.0, requests)
                    client_ms = (sum(os.times()[:2]) - own0) * 1e3 / max(1.0, requests)
                    rows.setdefault((n, label), []).append((r["throughput"], r["p50_ms"], server_ms, client_ms))
                    print(f"  {n:>3} clients  {label:<10} {r['throughput']:7.0f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                          f"errors {r['errors']}", flush=True)
        time.sleep(args.settle)
        rss = {label: tree_rss_mb(server.proc.pid) for label, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    print(f"\nmedians of {args.rounds} interleaved rounds of {args.seconds:g} s\n\n"
          "| clients | server | req/s | p50 ms | server CPU ms/request | client CPU ms/request |\n|---|---|---|---|---|---|")
    for (n, label), runs in rows.items():
        req_s, p50, server_ms, client_ms = (statistics.median(column) for column in zip(*runs))
        print(f"| {n} | {label} | {req_s:,.0f} | {p50:.2f} | {server_ms:.3f} | {client_ms:.3f} |")
    print(f"\n| server | RSS MB, {args.settle:g} s after the load |\n|---|---|")
    for label, mb in rss.items():
        print(f"| {label} | {mb:,.0f} |")


if __name__ == "__main__":
    main()
