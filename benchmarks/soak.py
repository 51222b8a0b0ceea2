"""Soak test: N clients x M minutes of mixed Predict traffic against `genserve serve` run as a
subprocess, with injected faults; prints what survived.

    .venv/bin/python benchmarks/soak.py                       # 8 clients x 1 minute (defaults)
    .venv/bin/python benchmarks/soak.py --clients 16 --minutes 5 --keep /tmp/soak

Traffic (each client thread has its own genserve Client, deadline --deadline s, retries on):
toy `affine` (y = 2x + b, checked against the biases exported), VAE `decode` of a few latent points,
VAE `encode` of one image; ~10 % of requests are "abandoned": sent with a 5 ms deadline (counted
apart; DEADLINE_EXCEEDED is their expected end).
Faults, at fractions of the run: 0.3 the server is SIGKILLed and restarted on the SAME port;
0.6 a new toy version is exported while traffic flows (the server picks it up by polling).
Reports requests ok / failed (a failure = a non-abandoned request that did not return a correct
answer within its deadline: a "lost result"), p50/p99 latency, server RSS, server deaths (exits
that were not our kill). Goal: 0 deaths, 0 failed, RSS growth < 10 %.

Setup (a tiny VAE trained on synthetic data, the toy model) runs through the `genserve` CLI in
subprocesses, so this process never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness import GENSERVE, ServerProcess  # noqa: E402
from genserve.clients import Client, GenserveError  # noqa: E402

BIASES = (1.0, 5.0)  # toy v1, then the version exported during traffic
ABANDON_SHARE = 0.10
ABANDON_TIMEOUT = 0.005


def run(*args: str, log=None) -> None:
    subprocess.run([str(GENSERVE), *args], check=True, stdout=log or subprocess.DEVNULL,
                   stderr=subprocess.STDOUT if log else subprocess.DEVNULL)


class Server(ServerProcess):
    """`genserve serve` as a subprocess that counts the exits we did not cause (and restarts)."""

    deaths = 0

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self.deaths += 1
            self.start()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0
        self.failed: dict[str, int] = {}
        self.abandoned = {"deadline": 0, "answered": 0, "other": 0}
        self.latencies: list[float] = []

    def fail(self, why: str) -> None:
        with self.lock:
            self.failed[why] = self.failed.get(why, 0) + 1


def client_loop(target: str, deadline: float, stop: threading.Event, stats: Stats, seed: int) -> None:
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    with Client(target, timeout=deadline) as client:
        while not stop.is_set():
            kind = rng.choice(("toy", "decode", "encode"))
            abandon = rng.random() < ABANDON_SHARE
            timeout = ABANDON_TIMEOUT if abandon else deadline
            start = time.monotonic()
            try:
                if kind == "toy":
                    x = nrng.uniform(-5, 5, (4, 1)).astype(np.float32)
                    y = client.predict("toy", {"x": x}, signature="affine", timeout=timeout)["y"]
                    good = any(np.allclose(y, 2 * x + b, atol=1e-5) for b in BIASES)
                elif kind == "decode":
                    z = nrng.standard_normal((16, 2)).astype(np.float32)
                    images = client.predict("vae", {"z": z}, signature="decode", timeout=timeout)["images"]
                    good = images.shape == (16, 28, 28, 1) and bool(np.all(np.isfinite(images)))
                else:
                    image = nrng.random((1, 28, 28, 1), dtype=np.float32)
                    out = client.predict("vae", {"images": image}, signature="encode", timeout=timeout)
                    good = out["z_mean"].shape == (1, 2) and bool(np.all(np.isfinite(out["z_mean"])))
            except GenserveError as e:
                if abandon:
                    with stats.lock:
                        key = "deadline" if e.code.name == "DEADLINE_EXCEEDED" else "other"
                        stats.abandoned[key] += 1
                else:
                    stats.fail(f"{kind}: {e.code.name}")
                continue
            elapsed = time.monotonic() - start
            with stats.lock:
                if abandon:
                    stats.abandoned["answered"] += 1
                elif good:
                    stats.ok += 1
                    stats.latencies.append(elapsed)
                else:
                    stats.failed[f"{kind}: wrong answer"] = stats.failed.get(f"{kind}: wrong answer", 0) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=1.0)
    # A restart (process start, TF import, model loads) took ~15 s on the 2-core box under this load:
    # the deadline must exceed it for requests caught by the restart to finish.
    parser.add_argument("--deadline", type=float, default=30.0, help="per-request deadline, seconds")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp dir)")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="genserve-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    models, log = work / "models", work / "soak.log"
    try:
        t0 = time.monotonic()
        with open(log, "a") as out:
            if not (models / "vae").exists():
                run("train", "vae", "--workdir", str(work / "vae"), "--dataset", "synthetic", "--epochs", "1",
                    "--train-limit", "64", "--test-limit", "32", "--quiet", log=out)
                run("export", "vae", "--workdir", str(work / "vae"), "--models-dir", str(models), log=out)
                run("export", "toy", "--models-dir", str(models), "--bias", str(BIASES[0]), log=out)
        print(f"setup (train + export, subprocesses): {time.monotonic() - t0:.1f} s; work dir {work}")

        server = Server(models, log=log)
        server.start()
        print(f"server up in {server.wait_ready('vae', 'toy'):.1f} s on {server.target}")
        target = server.target
        stats, stop = Stats(), threading.Event()
        threads = [threading.Thread(target=client_loop, args=(target, args.deadline, stop, stats, i),
                                    daemon=True) for i in range(args.clients)]
        duration = args.minutes * 60
        start = time.monotonic()
        for t in threads:
            t.start()
        rss: dict[str, float] = {}
        events = [(min(5.0, duration * 0.1), "rss_warm_1"), (duration * 0.3, "restart"),
                  (duration * 0.3 + 10.0, "rss_warm_2"), (duration * 0.6, "export"),
                  (duration - 0.5, "rss_end")]
        restart_s = float("nan")
        for at, event in sorted(events):
            while time.monotonic() - start < at:
                server.check_alive()
                time.sleep(0.1)
            if event.startswith("rss"):
                rss[event] = server.rss_mb()
            elif event == "restart":
                rss["rss_before_kill"] = server.rss_mb()
                server.kill()
                began = time.monotonic()
                server.start()
                server.wait_ready('vae', 'toy')
                restart_s = time.monotonic() - began
            elif event == "export":
                with open(log, "a") as out:
                    began = time.monotonic()
                    run("export", "toy", "--models-dir", str(models), "--bias", str(BIASES[1]), log=out)
                print(f"exported toy bias {BIASES[1]} during traffic in {time.monotonic() - began:.1f} s")
        stop.set()
        for t in threads:
            t.join(timeout=args.deadline + 5)
        server.check_alive()
        server.stop()

        lat = np.array(stats.latencies) * 1000
        failed = sum(stats.failed.values())
        print(f"\n{args.clients} clients x {args.minutes:g} min, deadline {args.deadline:g} s, "
              f"1 kill+restart on the same port (back in {restart_s:.1f} s), 1 export during traffic")
        print(f"requests ok {stats.ok}, failed (lost results) {failed} {stats.failed or ''}")
        print(f"abandoned ({ABANDON_TIMEOUT * 1000:g} ms deadline): {stats.abandoned}")
        if len(lat):
            print(f"latency ms: p50 {np.percentile(lat, 50):.1f}  p99 {np.percentile(lat, 99):.1f}  "
                  f"max {lat.max():.0f}  ({len(lat) / duration:.0f} ok requests/s)")
        print(f"server RSS MB: warm {rss.get('rss_warm_1', float('nan')):.0f} -> before kill "
              f"{rss.get('rss_before_kill', float('nan')):.0f}; after restart warm "
              f"{rss.get('rss_warm_2', float('nan')):.0f} -> end {rss.get('rss_end', float('nan')):.0f} "
              f"(growth {100 * (rss['rss_end'] / rss['rss_warm_2'] - 1):+.1f} %)")
        print(f"server deaths (exits we did not cause): {server.deaths}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
