"""The text `step` round trip of genserve source trees side by side (client and server of each tree),
with the floor rows of predict_latency.py, interleaved: for before/after comparisons of the step path.

    git archive <base> | (mkdir -p /tmp/base && tar -x -C /tmp/base)
    .venv/bin/python benchmarks/step_ab.py base=/tmp/base,head=$PWD --rounds 8
    .venv/bin/python benchmarks/step_ab.py plain=.,intra1=.+--tensorflow-intra-op-parallelism=1 --in-process-intra-op 1

Each NAME=PATH[+ARG...] (default: this tree alone) runs `genserve serve --disable-batching [ARG ...]` with
PYTHONPATH=PATH on an untrained book-size char-LSTM (exported once into --models), and a client process with the same PYTHONPATH that calls its
own tree's server with `Client.predict(..., signature="step")` (row NAME) and with the serialized
request as raw bytes (row NAME raw: the server alone). The floor rows as in predict_latency.py: a bare
gRPC echo of 1.1 KB, the step in process, and an echo server running the step per call (the bound).
A last server shows what a Python server cannot skip: predict_latency's minimal server reads the
request with genserve's wire code, runs the step with the request's deadline and writes the reply, with
none of genserve's lookups, checks, admission or metrics; rows "minimal server" (this tree's client)
and "minimal server raw" (the raw-bytes client). `--in-process-intra-op N` adds the in-process step on a
Session with N intra-op threads (TF Serving's --tensorflow_intra_op_parallelism; default: TF picks).
Every round runs each row's calls in turn; the medians over all calls are printed, and per tree the
ratio step / (echo + in-process step) (issue 8's goal: <= 1.25).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# A timing worker: argv [kind, target or model path]; reads a call count per line on stdin, answers one
# JSON list of per-call milliseconds per line. kinds: client (Client.predict step), raw (the serialized
# step request as bytes to Predict), echo (1.1 KB to the echo server), step_echo (the step request's
# bytes to the echo server), inproc (the step in this process, graph Session; where = PATH[+INTRA_OP_THREADS]).
WORKER = r"""
import json, os, sys, time
import numpy as np
kind, where = sys.argv[1], sys.argv[2]
units = 128
ids = np.zeros(1, np.int32); h = np.zeros((1, units), np.float32)
if kind == "inproc":
    from genserve.serving.loader import load_saved_model
    from genserve.serving.tf_session import session_config
    where, _, intra = where.partition("+")
    step = load_saved_model(where, config=session_config(int(intra or 0))).signatures["step"]
    call = lambda: step.run({"ids": ids, "h": h, "c": h})
elif kind == "client":
    from genserve.clients import Client
    client = Client(where, timeout=10)
    call = lambda: client.predict("text", {"ids": ids, "h": h, "c": h}, signature="step")
else:
    import grpc
    from genserve.clients.messages import predict_request
    channel = grpc.insecure_channel(where)
    if kind == "echo":
        body = os.urandom(1100)
    else:
        body = predict_request("text", {"ids": ids, "h": h, "c": h}, "step").SerializeToString()
    path = "/tensorflow.serving.PredictionService/Predict" if kind == "raw" else "/bench.Echo/Echo"
    method = channel.unary_unary(path)
    call = lambda: method(body, timeout=10)
for _ in range(30):
    call()
print("ready", flush=True)
for line in sys.stdin:
    times = []
    for _ in range(int(line)):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    print(json.dumps(times), flush=True)
"""


class Worker:
    def __init__(self, kind: str, where: str, pythonpath: str):
        env = {**os.environ, "PYTHONPATH": pythonpath, "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, kind, where], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{kind} worker did not start")

    def run(self, calls: int) -> list[float]:
        self.proc.stdin.write(f"{calls}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


def main() -> None:
    from benchmarks.harness import ServerProcess, balanced_orders, export_untrained_text
    from benchmarks.predict_latency import ECHO_SERVER

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="?", default=f"this={ROOT}",
                        help="NAME=PATH[+ARG...],... (PATH: a genserve source tree; ARGs: extra `genserve "
                        "serve` arguments; default: this tree)")
    parser.add_argument("--rounds", type=int, default=8,
                        help="rounds, raised to whole balanced designs (harness.balanced_orders)")
    parser.add_argument("--calls", type=int, default=200, help="calls per row per round")
    parser.add_argument("--in-process-intra-op", type=int, default=0,
                        help="also time the step in process on a Session with this many intra-op threads")
    parser.add_argument("--models", default=str(Path(tempfile.gettempdir()) / "genserve-step-ab"))
    args = parser.parse_args()
    trees, extra = {}, {}
    for item in args.trees.split(","):
        name, _, spec = item.partition("=")
        path, *extra[name] = spec.split("+")
        trees[name] = str(Path(path).resolve())
    models = Path(args.models)
    if not (models / "text").exists():
        export_untrained_text(models, models.parent / (models.name + "-work"))
    text_path = str(sorted((models / "text").iterdir())[-1])
    here = str(ROOT)
    procs, workers, echoes = [], {}, []
    try:
        servers = {}
        for name, path in trees.items():
            os.environ["PYTHONPATH"] = path  # the server process's genserve
            servers[name] = ServerProcess(models, "--disable-batching", *extra[name], poll_seconds=0).start()
            procs.append(servers[name])
        env = {**os.environ, "PYTHONPATH": here, "TF_CPP_MIN_LOG_LEVEL": "2"}
        echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, here], stdout=subprocess.PIPE, text=True, env=env)
        echoes.append(echo)
        step_echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, here, text_path],
                                     stdout=subprocess.PIPE, text=True, env=env)
        echoes.append(step_echo)
        minimal = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, here, text_path, "minimal"],
                                   stdout=subprocess.PIPE, text=True, env=env)
        echoes.append(minimal)
        echo_target = f"127.0.0.1:{echo.stdout.readline().strip()}"
        step_echo_target = f"127.0.0.1:{step_echo.stdout.readline().strip()}"
        minimal_target = f"127.0.0.1:{minimal.stdout.readline().strip()}"
        for server in servers.values():
            server.wait_ready("text")
        workers["echo"] = Worker("echo", echo_target, here)
        workers["step in process"] = Worker("inproc", text_path, here)
        if args.in_process_intra_op:
            workers[f"step in process, intra-op {args.in_process_intra_op}"] = \
                Worker("inproc", f"{text_path}+{args.in_process_intra_op}", here)
        workers["echo running the step (bound)"] = Worker("step_echo", step_echo_target, here)
        workers["minimal server"] = Worker("client", minimal_target, here)
        workers["minimal server raw"] = Worker("raw", minimal_target, here)
        for name, path in trees.items():
            workers[name] = Worker("client", servers[name].target, path)
            workers[f"{name} raw"] = Worker("raw", servers[name].target, path)
        times = {name: [] for name in workers}
        orders = balanced_orders(list(workers))  # every row after every other row equally often
        args.rounds = -(-args.rounds // len(orders)) * len(orders)  # whole designs only
        for turn in range(args.rounds):
            for name in orders[turn % len(orders)]:
                times[name] += workers[name].run(args.calls)
    finally:
        for worker in workers.values():
            worker.close()
        for server in procs:
            server.stop()
        for process in echoes:
            process.terminate()
            process.wait(30)
    ms = {name: statistics.median(t) for name, t in times.items()}
    floor = ms["echo"] + ms["step in process"]
    print(f"text step round trip, {args.rounds} rounds x {args.calls} calls per row, medians; "
          f"load average {os.getloadavg()[0]:.1f}")
    intra = f"step in process, intra-op {args.in_process_intra_op}"
    for name, value in ms.items():
        ratio = ""
        if not name.startswith(("echo", "step in")) or name.startswith("echo running"):
            ratio = f"  ratio to echo + step {value / floor:5.2f}"
            if intra in ms:
                ratio += f", to echo + step intra-op {args.in_process_intra_op} {value / (ms['echo'] + ms[intra]):5.2f}"
        print(f"  {name:<32} {value:7.3f} ms{ratio}")


if __name__ == "__main__":
    main()
