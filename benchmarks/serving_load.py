"""Server-side batching under load: 64 concurrent clients on VAE `decode`, batched vs unbatched.

    .venv/bin/python benchmarks/serving_load.py                    # 64 clients, 8 s per phase
    .venv/bin/python benchmarks/serving_load.py --clients 32 --seconds 5

The VAE is the book's architecture (latent 2, conv 32-64-64-64) with random weights: timing does not
need training. It is exported with genserve's writer (so its version folder carries the
batching_params.pbtxt every VAE export has: max_batch_size 8192, batch_timeout_micros 2000,
max_enqueued_batches 100, 4 batch threads by default). Two servers run the same code in two
subprocesses of this script (`--serve`), identical but for `enable_batching`, each with 96 gRPC
worker threads and a per-model queue of 256 so no client is refused; the clients (genserve's thin
`Client`, one channel each, batch 1 per request, no retries) run as threads in THIS process, never in
a server's. The phases run one after another in one run: 1 client and N clients against each server.
Prints throughput, p50 and p99 latency side by side and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.harness import export_untrained_vae  # noqa: E402
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_server(models_dir: Path, batching: bool, port_file: Path, batch_threads: int | None) -> None:
    """The server subprocess: serve until stdin closes, then write the Batcher's counters (if any)
    next to the port file."""
    import json

    from genserve.serving.server import ModelServer

    server = ModelServer(models_dir, poll_seconds=0, enable_batching=batching, max_workers=96, max_queue=256,
                         batch_threads=batch_threads)
    port = server.start()
    port_file.write_text(str(port))
    sys.stdin.read()  # the parent closes our stdin to stop us
    batcher = server.registry.resolve("vae").extras.get("batcher")
    stats = {"runs": batcher.runs, "tasks": batcher.tasks} if batcher else {}
    server.stop(grace=1.0)
    port_file.with_suffix(".json").write_text(json.dumps(stats))


def start_server(models_dir: Path, batching: bool, tmp: Path,
                 batch_threads: int | None) -> tuple[subprocess.Popen, str]:
    port_file = tmp / f"port-{int(batching)}"
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(models_dir),
                             "--batching", "on" if batching else "off", "--port-file", str(port_file)]
                            + (["--batch-threads", str(batch_threads)] if batch_threads else []),
                            stdin=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not port_file.exists() or not port_file.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("server subprocess did not start")
        time.sleep(0.1)
    return proc, f"127.0.0.1:{port_file.read_text()}"


def _raw_call(target: str, latent: int, seed: int):
    """A Predict call on a raw gRPC channel with the request serialized once (identity serializers):
    the cheapest client Python can be, so the 2 cores go to the server."""
    import grpc

    from genserve.clients.messages import PREDICT_METHOD, predict_request

    z = np.random.default_rng(seed).standard_normal((1, latent), dtype=np.float32)
    body = predict_request("vae", {"z": z}, "decode").SerializeToString()
    channel = grpc.insecure_channel(target)
    method = channel.unary_unary(PREDICT_METHOD)  # bytes in, bytes out
    return channel, lambda: method(body, timeout=30)


def run_clients(make_call, clients: int, seconds: float, warmup: float = 1.0) -> dict:
    """`clients` threads sending back to back for `warmup` + `seconds`; only the last `seconds` count.

    Args:
        make_call: i -> (a context manager holding client i's connection, a function making one call).
    Returns:
        requests, throughput (req/s), p50_ms, p99_ms and errors (calls that raised).
    """
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    barrier = threading.Barrier(clients + 1)
    window = {}

    def client_loop(i: int) -> None:
        try:
            connection, call = make_call(i)
        except Exception:  # noqa: BLE001 (this client makes no calls; counted)
            errors[i] += 1
            barrier.wait()
            barrier.wait()
            return
        with connection:
            try:
                call()  # connect
            except Exception:  # noqa: BLE001 (counted and reported)
                errors[i] += 1
            barrier.wait()  # every client connected
            barrier.wait()  # the window is set
            stop_at, measure_from = window["stop"], window["from"]
            while True:
                start = time.monotonic()
                if start >= stop_at:
                    return
                try:
                    call()
                except Exception:  # noqa: BLE001 (counted and reported)
                    errors[i] += 1
                    continue
                if start >= measure_from:
                    latencies[i].append(time.monotonic() - start)

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()  # every client connected
    window["from"] = time.monotonic() + warmup
    window["stop"] = window["from"] + seconds
    barrier.wait()
    for t in threads:
        t.join()
    flat = np.array([x for per in latencies for x in per]) if any(latencies) else np.array([np.nan])
    return {"requests": int(np.isfinite(flat).sum()), "throughput": np.isfinite(flat).sum() / seconds,
            "p50_ms": np.percentile(flat, 50) * 1e3, "p99_ms": np.percentile(flat, 99) * 1e3,
            "errors": sum(errors)}


def load(target: str, clients: int, seconds: float, latent: int, raw: bool, warmup: float = 1.0) -> dict:
    """`clients` threads, each with its own channel, each sending decode(z of (1, latent)) back to back
    (a genserve Client, or a raw stub sending pre-serialized bytes)."""
    from genserve.clients import Client, RetryPolicy

    def make_call(i: int):
        if raw:
            return _raw_call(target, latent, i)
        rng = np.random.default_rng(i)
        client = Client(target, timeout=30, retry=RetryPolicy.disabled())
        return client, lambda: client.predict("vae", {"z": rng.standard_normal((1, latent), dtype=np.float32)},
                                              signature="decode")

    return run_clients(make_call, clients, seconds, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per phase")
    parser.add_argument("--client", choices=["raw", "genserve"], default="raw",
                        help="raw: gRPC stub sending pre-serialized bytes (least client CPU); genserve: "
                             "the thin Client, encoding each request")
    parser.add_argument("--batch-threads", type=int, help="batch threads per model (default: the "
                        "batching file's num_batch_threads, else 4)")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--batching", choices=["on", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        return run_server(args.serve, args.batching == "on", args.port_file, args.batch_threads)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        from genserve.training.vae import VAEConfig

        export_untrained_vae(tmp / "models", tmp / "vae-work", VAEConfig(), version=1)
        latent = VAEConfig().latent_dim
        rows = {}
        for batching in (False, True):
            proc, target = start_server(tmp / "models", batching, tmp, args.batch_threads)
            try:
                for clients in (1, args.clients):
                    rows[(batching, clients)] = load(target, clients, args.seconds, latent, args.client == "raw")
            finally:
                proc.stdin.close()
                proc.wait(30)
        stats = json.loads((tmp / "port-1.json").read_text())

    n = args.clients
    print(f"\nVAE decode, z (1, {latent}) per request, untrained book-size VAE; {os.cpu_count()} CPU cores; "
          f"{args.seconds:g} s measured per phase; {args.client} clients in the benchmark process, servers in "
          "subprocesses")
    print(f"{'server':<12} {'clients':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for (batching, clients), r in rows.items():
        print(f"{'batching' if batching else 'unbatched':<12} {clients:>7} {r['throughput']:>9.0f} "
              f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['errors']:>7}")
    plain1, plain_n, batched1, batched_n = rows[(False, 1)], rows[(False, n)], rows[(True, 1)], rows[(True, n)]
    ratio = batched_n["throughput"] / plain_n["throughput"]
    print(f"\nthroughput at {n} clients, batching / unbatched: {ratio:.2f}x (goal >= 3x)")
    print(f"p99 at {n} clients with batching / unbatched p50 at 1 client: "
          f"{batched_n['p99_ms'] / plain1['p50_ms']:.2f} (goal <= 2)")
    print(f"p99 at {n} clients, batching / unbatched: {batched_n['p99_ms'] / plain_n['p99_ms']:.2f}; "
          f"p50 at 1 client, batching / unbatched: {batched1['p50_ms'] / plain1['p50_ms']:.2f} "
          "(a lone request waits batch_timeout_micros)")
    print(f"batched server: {stats['tasks']} requests in {stats['runs']} Session runs "
          f"({stats['tasks'] / max(1, stats['runs']):.1f} requests per run, warm-up included)")


if __name__ == "__main__":
    main()
