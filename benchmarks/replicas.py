"""Replicas behind gRPC round_robin (issue 18): throughput and p99 with 1, 2 and 3 `genserve serve`
replicas on this machine, and the time from SIGKILL of a replica to the failed-over answers.

    .venv/bin/python benchmarks/replicas.py [--seconds 5] [--threads 8] [--model toy|vae]

Every replica is its own `genserve serve --enable-grpc-healthcheck-service` process (batching off)
over the same models directory. For n = 1, 2, 3 one `Client` on "127.0.0.1:a[,127.0.0.1:b[,...]]" is shared by `--threads` threads that
each send Predict calls back to back for `--seconds`; the lines give calls per second and the median
and p99 latency. On one machine the replicas share its cores, so more replicas add throughput only
while the server side (not the client or the cores) is the bottleneck.

Failover: the same threads run against three replicas; one is SIGKILLed. A call in flight on it fails
with UNAVAILABLE inside the Client and is retried at once (later retries back off) on another replica; the
line gives the seconds from the kill to the last answer of the calls that were in flight at the kill
(the worst failed-over answer), their median, and the number of failed calls (0 expected).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.harness import ServerProcess, export_untrained_vae  # noqa: E402


def _call(model: str):
    if model == "toy":
        return "toy", {"x": np.ones((1, 1), np.float32)}, None
    return "vae", {"z": np.zeros((1, 2), np.float32)}, "decode"


def load(target: str, seconds: float, threads: int, model: str, on_start=None):
    """Run `threads` closed-loop callers for `seconds`; returns (spans [(start, end)], failures).
    `on_start(t)` runs in the main thread at time t = seconds / 2 when given (the failover kill)."""
    from genserve.clients import Client, GenserveError

    name, inputs, signature = _call(model)
    spans: list[tuple[float, float]] = []
    failures: list[str] = []
    lock = threading.Lock()
    with Client(target, timeout=30) as client:
        for _ in range(20):  # warm every replica's connection
            client.predict(name, inputs, signature=signature)
        stop_at = time.perf_counter() + seconds

        def worker():
            mine, bad = [], []
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                try:
                    client.predict(name, inputs, signature=signature)
                    mine.append((start, time.perf_counter()))
                except GenserveError as e:
                    bad.append(f"{e.code.name}: {e.details}")
            with lock:
                spans.extend(mine)
                failures.extend(bad)

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for thread in pool:
            thread.start()
        if on_start is not None:
            time.sleep(seconds / 2)  # a benchmark's schedule, not a synchronisation
            on_start(time.perf_counter())
        for thread in pool:
            thread.join()
    return spans, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="load per configuration")
    parser.add_argument("--threads", type=int, default=8, help="client threads sharing one Client")
    parser.add_argument("--model", choices=("toy", "vae"), default="toy")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="genserve-bench-replicas-"))
    models = tmp / "models"
    if args.model == "toy":
        from genserve.export.toy import export_toy

        export_toy(models)
    else:
        export_untrained_vae(models, tmp / "vae")
    servers = [ServerProcess(models, "--disable-batching", "--enable-grpc-healthcheck-service", poll_seconds=0)
               for _ in range(3)]
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready(args.model)
        print(f"{args.model} Predict, batch 1, {args.threads} threads on one Client, {args.seconds:g} s each")
        for n in (1, 2, 3):
            target = ",".join(s.target for s in servers[:n])
            spans, failures = load(target, args.seconds, args.threads, args.model)
            ms = sorted((end - start) * 1e3 for start, end in spans)
            p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
            print(f"{n} replica(s): {len(spans) / args.seconds:8.0f} calls/s   median {statistics.median(ms):6.2f} ms"
                  f"   p99 {p99:6.2f} ms   failed {len(failures)}")

        killed: list[float] = []
        spans, failures = load(",".join(s.target for s in servers), args.seconds, args.threads, args.model,
                               on_start=lambda t: (servers[1].kill(), killed.append(t)))
        t_kill = killed[0]
        spanning = sorted(end - t_kill for start, end in spans if start < t_kill < end)
        if spanning:
            print(f"failover: SIGKILL of 1 of 3 replicas -> last in-flight call answered after "
                  f"{spanning[-1] * 1e3:.0f} ms (median of the {len(spanning)} in flight "
                  f"{statistics.median(spanning) * 1e3:.0f} ms); failed calls {len(failures)}")
        else:
            print(f"failover: no call was in flight at the kill; failed calls {len(failures)}")
        for line in sorted(set(failures))[:3]:
            print("  failure:", line)
    finally:
        for server in servers:
            server.kill()


if __name__ == "__main__":
    main()
