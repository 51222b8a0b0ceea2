"""Single-client REST p50 of genserve source trees side by side with KServe (the peers.py row
"REST, 1 client, p50 — batching off"), interleaved, for before/after comparisons of the REST path.

    git archive <base> | (mkdir -p /tmp/base && tar -x -C /tmp/base)
    .venv/bin/python benchmarks/rest_single.py base=/tmp/base,head=$PWD,kserve= --rounds 8

Each NAME=PATH runs `genserve serve --disable-batching` with PYTHONPATH=PATH on an untrained book-size
VAE (exported once into --models); the name `kserve` runs peers.py's KServe server (1 worker) in
--kserve-python instead. Every round runs each server's phase in turn (one client, `--seconds` after
0.3 s of warm-up, VAE `decode` with z (1, 2) as TF Serving JSON); the medians of the rounds' p50s are
printed, and each server's ratio to the first one named.
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


def main() -> None:
    from benchmarks.harness import ServerProcess, export_untrained_vae
    from benchmarks.peers import KServeProcess, rest_factory
    from benchmarks.serving_load import run_clients
    from genserve.training.vae import VAEConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="?", help="NAME=PATH,... (PATH: a genserve source tree; NAME kserve: "
                        "KServe; default: this tree, and KServe when --kserve-python exists)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--models", default=str(Path(tempfile.gettempdir()) / "genserve-rest-single"))
    parser.add_argument("--kserve-python", default=str(ROOT / ".venv-peers" / "bin" / "python"))
    args = parser.parse_args()
    if args.trees is None:
        args.trees = f"genserve={ROOT}" + (",kserve=" if Path(args.kserve_python).exists() else "")
    trees = dict(item.split("=", 1) for item in args.trees.split(","))
    models = Path(args.models)
    if not (models / "vae").exists():
        export_untrained_vae(models, models.parent / (models.name + "-work"), VAEConfig(), version=1)
    z = np.random.default_rng(0).standard_normal((1, VAEConfig().latent_dim), dtype=np.float32)
    body = json.dumps({"instances": z.tolist()}).encode()
    servers = {}
    try:
        for name, path in trees.items():
            if name == "kserve":
                tmp = Path(tempfile.mkdtemp(prefix="genserve-rest-single-"))
                servers[name] = KServeProcess(args.kserve_python, models / "vae" / "1", 1, tmp,
                                              tmp / "kserve.log").start()
            else:
                os.environ["PYTHONPATH"] = str(Path(path).resolve())  # the server process's genserve
                servers[name] = ServerProcess(models, "--disable-batching", rest=True, poll_seconds=0).start()
        for name, server in servers.items():
            server.wait_ready(body) if name == "kserve" else server.wait_ready("vae")
        ports = {name: s.http_port if name == "kserve" else s.rest_port for name, s in servers.items()}
        p50 = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, port in ports.items():
                p50[name].append(run_clients(rest_factory(port, body), 1, args.seconds, warmup=0.3)["p50_ms"])
    finally:
        for server in servers.values():
            server.stop()
    first = next(iter(p50))
    print(f"REST, 1 client, VAE decode z (1, 2), batching off; {args.rounds} rounds x {args.seconds:g} s; "
          f"load average {os.getloadavg()[0]:.1f}")
    for name, values in p50.items():
        print(f"  {name:<10} p50 {np.median(values):6.3f} ms  ratio to {first} "
              f"{np.median(values) / np.median(p50[first]):5.3f}  rounds {' '.join(f'{v:.2f}' for v in values)}")


if __name__ == "__main__":
    main()
