"""What one thread hand-off costs a lone REST request: a bare aiohttp server answering a VAE-sized JSON
(784 floats), with the answer made on the event loop or on a worker thread (one round trip), on
asyncio's loop and on uvloop's, interleaved, one client.

    .venv/bin/python benchmarks/rest_handoff.py [--rounds 5]

No model and no genserve code on the server side: the difference between the rows is the hand-off
alone (what rest_api.INLINE_PARSE_BYTES saves, and what uvloop changes; benchmarks/README.md, session 6).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODES = ("inline", "hop", "uvloop-inline", "uvloop-hop")
SERVER = r"""
import asyncio, json, sys
from concurrent import futures
import numpy as np
from aiohttp import web
port, mode = int(sys.argv[1]), sys.argv[2]
answer = '{"predictions": ' + json.dumps(np.random.default_rng(0).random((1, 28, 28, 1)).astype(np.float32).tolist()) + "}"
pool = futures.ThreadPoolExecutor(2)
def work(body):
    json.loads(body)
    return answer
async def handle(request):
    body = await request.read()
    text = await asyncio.wrap_future(pool.submit(work, body)) if mode.endswith("hop") else work(body)
    return web.Response(text=text, content_type="application/json")
app = web.Application()
app.router.add_route("*", "/{tail:.*}", handle)
if mode.startswith("uvloop"):
    import uvloop
    uvloop.install()
web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)
"""


def main() -> None:
    from benchmarks.harness import free_port
    from benchmarks.peers import rest_factory, rest_post
    from benchmarks.serving_load import run_clients

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args()
    body = json.dumps({"instances": [[0.1, 0.2]]}).encode()
    try:
        import uvloop  # noqa: F401
        modes = MODES
    except ImportError:
        modes = tuple(m for m in MODES if not m.startswith("uvloop"))
    procs = {}
    try:
        for mode in modes:
            port = free_port()
            procs[mode] = (subprocess.Popen([sys.executable, "-c", SERVER, str(port), mode]), port)
        for mode, (proc, port) in procs.items():
            deadline = time.monotonic() + 60
            while True:
                try:
                    rest_post(port, body)
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError(f"the {mode} server did not start") from None
                    time.sleep(0.1)
        p50 = {mode: [] for mode in modes}
        for _ in range(args.rounds):
            for mode, (_, port) in procs.items():
                p50[mode].append(run_clients(rest_factory(port, body), 1, args.seconds, warmup=0.2)["p50_ms"])
    finally:
        for proc, _ in procs.values():
            proc.terminate()
            proc.wait(10)
    print(f"bare aiohttp, one client, 17 KB JSON answer; load average {os.getloadavg()[0]:.1f}")
    for mode, values in p50.items():
        print(f"  {mode:<14} p50 {np.median(values):6.3f} ms  rounds {' '.join(f'{v:.2f}' for v in values)}")


if __name__ == "__main__":
    main()
