"""Where a REST Predict's CPU goes: the model process and its REST worker processes, per request.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/rest_cpu.py [--workers 0,2] [--clients 1,16] [--rounds 3]

One `genserve serve --disable-batching` per `--workers` value, serving the same untrained VAE, all up
at once; for each client count and round, each server in turn gets `--seconds` of VAE `decode` with
z (1, 2) over REST (keep-alive, back to back). CPU = utime + stime from /proc over the window, of the
model process and of its worker processes, divided by the requests answered: on a busy box far more
stable than latency. Prints one row per server and client count (medians over the rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[int]:
    """The ids of the processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="0,2", help="--rest-workers of each server")
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from benchmarks.harness import ServerProcess, export_untrained_vae
    from benchmarks.peers import rest_factory

    counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="genserve-rest-cpu-") as tmp_name:
        tmp = Path(tmp_name)
        export_untrained_vae(tmp / "models", tmp / "work", version=1)
        body = json.dumps({"instances": np.zeros((1, 2), np.float32).tolist()}).encode()
        servers = {n: ServerProcess(tmp / "models", "--disable-batching", "--max-queue", "256",
                                    "--rest-workers", str(n), rest=True, poll_seconds=0) for n in counts}
        try:
            for server in servers.values():
                server.start()
            for server in servers.values():
                server.wait_ready("vae")
            rows: dict = {}
            from benchmarks.serving_load import run_clients

            for clients in [int(c) for c in args.clients.split(",")]:
                for _ in range(args.rounds):
                    for n, server in servers.items():
                        pids = [server.proc.pid] + children(server.proc.pid)
                        before = [cpu_seconds(p) for p in pids]
                        result = run_clients(rest_factory(server.rest_port, body), clients, args.seconds, warmup=0.0)
                        used = [cpu_seconds(p) - b for p, b in zip(pids, before)]
                        done = max(1, result["requests"])
                        rows.setdefault((n, clients), []).append(
                            (used[0] / done * 1e3, sum(used[1:]) / done * 1e3, result["throughput"], result["p50_ms"]))
        finally:
            for server in servers.values():
                server.stop()
    print(f"\nVAE decode over REST, batching off; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"{args.seconds:g} s x {args.rounds} rounds, interleaved; medians over the rounds")
    print("\n| --rest-workers | clients | model process CPU ms/req | workers CPU ms/req | total | req/s | p50 ms |")
    print("|---|---|---|---|---|---|---|")
    for (n, clients), runs in rows.items():
        model, workers, rps, p50 = (float(np.median([r[i] for r in runs])) for i in range(4))
        print(f"| {n} | {clients} | {model:.2f} | {workers:.2f} | {model + workers:.2f} | {rps:,.0f} | {p50:.2f} |")


if __name__ == "__main__":
    main()
