"""Serving speed against a real peer: genserve and KServe's Python model server on one VAE SavedModel.

    make peers                     # builds .venv-peers (kserve 0.21 + genserve's tensorflow 2.21), full run
    make peers-quick               # the same, ~1 s per row (what CI runs)
    .venv/bin/python benchmarks/peers.py --kserve-python .venv-peers/bin/python [--quick]
    .venv/bin/python benchmarks/peers.py --genserve-only --quick      # no side venv: genserve rows only

Every server runs at once, each in its own process(es), on free loopback ports: `genserve serve` with
batching off and with the export's own batching_params.pbtxt (2 ms batch timeout), and KServe's
`ModelServer` with one REST worker and with as many workers as cores, each serving a small
`kserve.Model` written here (`KServeVAE`) that loads the same SavedModel with tf.saved_model.load and
runs its `decode` concrete function. The clients are threads of this process sending VAE `decode`
with z of (1, 2), back to back, each on its own keep-alive connection, the bodies encoded once:
- REST: TF Serving's JSON `{"instances": [[z0, z1]]}` to `/v1/models/vae:predict` on both servers
  (KServe's V1 protocol is TF Serving's JSON);
- gRPC: TF Serving's `Predict` to genserve, the Open Inference Protocol's `ModelInfer` (V2) to KServe
  (request serialized by the KServe process, which has the generated classes), raw bytes both ways.
The phases are interleaved: for each protocol and client count, every server runs its phase in turn,
`--rounds` times, so a burst of load from other processes hits them alike; latencies of a row are
pooled over its rounds. `--rest-workers N` adds both genserve servers again with `--rest-workers N`
(REST rows only). RSS is read after the load (the sum over a server's processes: KServe's workers,
genserve's REST workers), and
also given above a bare `import tensorflow` in the same Python (what the server itself adds).
Then the floor ratios of `predict_latency.py` (text `step` over gRPC / (echo + in-process step), and
client-side generation vs the book's window requests), measured by its `measure()`.
"""

from __future__ import annotations

import argparse
import http.client
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
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODEL = "vae"
V2_INFER = "/inference.GRPCInferenceService/ModelInfer"
PREDICT = "/tensorflow.serving.PredictionService/Predict"
MARKER_ENV = "GENSERVE_PEERS_MARKERS"  # the folder where each KServe REST worker marks itself loaded


# -- the KServe side (runs in the side venv: kserve + tensorflow, nothing of genserve) ----------------
try:
    import kserve
except ImportError:  # genserve's venv: only the client side of this file is used there
    kserve = None

if kserve is not None:
    from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

    class KServeVAE(kserve.Model):
        """The VAE's `decode` signature: V1 REST `{"instances": [z, ...]}` -> `{"predictions": images}`,
        V2 (gRPC ModelInfer) input `z` FP32 -> output `images` FP32. Pickles as its name and path, so
        each REST worker process KServe spawns loads the SavedModel itself."""

        def __init__(self, name: str, path: str):
            super().__init__(name)
            self.path = path
            self.decode = None
            self.output_key = None

        def __getstate__(self):
            return {"name": self.name, "path": self.path}

        def __setstate__(self, state):
            # In a REST worker: load in a thread, as the parent kills a worker that does not answer
            # its pings within 5 s; then mark the worker loaded for KServeProcess.wait_ready.
            self.__init__(state["name"], state["path"])
            self.ready = True
            self._loaded = threading.Event()
            threading.Thread(target=self._load_worker, daemon=True).start()

        def _load_worker(self) -> None:
            self.load()
            self._loaded.set()
            Path(os.environ[MARKER_ENV], f"loaded-{os.getpid()}").touch()

        def load(self) -> bool:
            import tensorflow as tf

            self.decode = tf.saved_model.load(self.path).signatures["decode"]  # the concrete function
            self.output_key = sorted(self.decode.structured_outputs)[0]
            self.ready = True
            return self.ready

        def run(self, z: np.ndarray) -> np.ndarray:
            if self.decode is None:
                self._loaded.wait()
            return self.decode(z=z.astype(np.float32, copy=False))[self.output_key].numpy()

        def predict(self, payload, headers=None):
            if isinstance(payload, InferRequest):
                images = self.run(payload.inputs[0].as_numpy())
                output = InferOutput(name=self.output_key, shape=list(images.shape), datatype="FP32")
                output.set_data_from_numpy(images, binary_data=True)
                return InferResponse(response_id=payload.id or "", model_name=self.name,
                                     infer_outputs=[output])
            return {"predictions": self.run(np.asarray(payload["instances"], np.float32)).tolist()}


def kserve_main(version_dir: str, http_port: int, grpc_port: int, workers: int, request_file: str) -> None:
    """Serve the SavedModel at `version_dir` as model `vae` with KServe's ModelServer; first write the
    serialized V2 ModelInferRequest for one z of (1, latent) to `request_file` for the gRPC clients."""
    model = KServeVAE(MODEL, version_dir)
    model.load()
    latent = int(model.decode.structured_input_signature[1]["z"].shape[-1])
    z = np.random.default_rng(0).standard_normal((1, latent), dtype=np.float32)
    infer_input = InferInput(name="z", shape=list(z.shape), datatype="FP32")
    infer_input.set_data_from_numpy(z, binary_data=True)
    body = InferRequest(model_name=MODEL, infer_inputs=[infer_input]).to_grpc().SerializeToString()
    Path(request_file + ".tmp").write_bytes(body)
    os.replace(request_file + ".tmp", request_file)
    kserve.ModelServer(http_port=http_port, grpc_port=grpc_port, workers=workers,
                       enable_latency_logging=False).start([model])


class KServeProcess:
    """KServe's model server in the side venv's Python, on free ports; ready when its REST API answers."""

    def __init__(self, python: str, version_dir: Path, workers: int, tmp: Path, log: Path):
        from benchmarks.harness import free_port

        self.python, self.version_dir, self.workers = os.path.abspath(python), version_dir, workers
        self.http_port, self.grpc_port = free_port(), free_port()
        self.request_file = tmp / f"kserve-{workers}-infer.bin"
        self.markers = tmp / f"kserve-{workers}-workers"
        self.markers.mkdir()
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> "KServeProcess":
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(
                [self.python, str(Path(__file__).resolve()), "--kserve-serve", str(self.version_dir), "--http-port",
                 str(self.http_port), "--grpc-port", str(self.grpc_port), "--workers", str(self.workers),
                 "--request-file", str(self.request_file)],
                stdout=out, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir(),
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": "", MARKER_ENV: str(self.markers)},
                start_new_session=True)
        return self

    def wait_ready(self, body: bytes, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
                raise RuntimeError(f"KServe ({self.workers} workers) exited with {self.proc.returncode}:\n{tail}")
            try:
                status, _ = rest_post(self.http_port, body)
                workers_loaded = self.workers == 1 or len(list(self.markers.iterdir())) >= self.workers
                if status == 200 and self.request_file.exists() and workers_loaded:
                    return
                last = f"HTTP {status}"
            except OSError as e:
                last = str(e)
            time.sleep(0.5)
        raise TimeoutError(f"KServe not ready after {timeout:.0f} s ({last}); see {self.log}")

    def rss_mb(self) -> float:
        return tree_rss_mb(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)  # its own session: the workers go too
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


def import_rss_mb(python: str, statement: str = "import tensorflow", path: str = "") -> float:
    """Resident MB of `python` after `statement` (the TensorFlow import a server starts from; genserve's
    is loader.import_tensorflow, which leaves out the Keras that a bare `import tensorflow` loads)."""
    code = (f"{statement}\nfor line in open('/proc/self/status'):\n"
            "    if line.startswith('VmRSS:'): print(int(line.split()[1]) / 1024)")
    out = subprocess.run([os.path.abspath(python), "-c", code], capture_output=True, text=True, cwd=tempfile.gettempdir(),
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": path}, timeout=300)
    try:
        return float(out.stdout.split()[-1])
    except (IndexError, ValueError):
        return float("nan")


def tree_rss_mb(pid: int) -> float:
    """Resident MB of `pid` and all its descendants (KServe's REST workers are child processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


# -- clients -----------------------------------------------------------------------------------------
def rest_post(port: int, body: bytes, connection: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", f"/v1/models/{MODEL}:predict", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if connection is None:
            conn.close()


def rest_factory(port: int, body: bytes):
    def make_call(i: int):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        def call():
            status, _ = rest_post(port, body, conn)
            if status != 200:
                raise RuntimeError(f"HTTP {status}")
        return _Closing(conn), call
    return make_call


def grpc_factory(target: str, method: str, body: bytes):
    def make_call(i: int):
        import grpc

        channel = grpc.insecure_channel(target)
        stub = channel.unary_unary(method)  # bytes in, bytes out
        return channel, lambda: stub(body, timeout=30)
    return make_call


class _Closing:
    def __init__(self, thing):
        self.thing = thing

    def __enter__(self):
        return self.thing

    def __exit__(self, *exc):
        self.thing.close()


# -- the run ------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kserve-python", help="Python of a venv with kserve and tensorflow (default: "
                        ".venv-peers/bin/python, which make peers builds, if it exists)")
    parser.add_argument("--genserve-only", action="store_true", help="no KServe: genserve's rows only")
    parser.add_argument("--quick", action="store_true", help="1 s per phase, 1 and 16 clients, one round, "
                        "a short floor run (CI)")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per phase and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--kserve-workers", type=int, default=os.cpu_count() or 2,
                        help="REST workers of the second KServe server (default: the cores)")
    parser.add_argument("--rest-workers", type=int, default=0,
                        help="also run both genserve servers with `--rest-workers N` (REST rows only)")
    parser.add_argument("--skip-floor", action="store_true", help="leave out predict_latency's ratios")
    parser.add_argument("--kserve-serve", help=argparse.SUPPRESS)
    parser.add_argument("--http-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--grpc-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--request-file", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.kserve_serve:
        sys.argv = sys.argv[:1] + rest  # kserve parses its own flags from sys.argv
        return kserve_main(args.kserve_serve, args.http_port, args.grpc_port, args.workers, args.request_file)
    if not args.genserve_only and not args.kserve_python:
        side = ROOT / ".venv-peers" / "bin" / "python"
        if side.exists():
            args.kserve_python = str(side)
        else:
            print(f"no {side} (make peers builds it): genserve's rows only")
            args.genserve_only = True
    if args.quick:
        args.seconds, args.rounds, args.clients = 1.0, 1, "1,16"
    clients = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory(prefix="genserve-peers-") as tmp_name:
        results, rss, checks = run_all(args, clients, Path(tmp_name))
    floor = None
    if not args.skip_floor:
        from benchmarks import predict_latency

        floor = predict_latency.measure(calls=60 if args.quick else 300, length=20 if args.quick else 400)
    report(results, rss, checks, floor, clients, args)


def run_all(args, clients: list[int], tmp: Path):
    from benchmarks.harness import ServerProcess
    from benchmarks.harness import export_untrained_vae
    from benchmarks.serving_load import run_clients
    from genserve.training.vae import VAEConfig
    from genserve.clients.messages import predict_request

    export_untrained_vae(tmp / "models", tmp / "vae-work", VAEConfig(), version=1)
    latent = VAEConfig().latent_dim
    version_dir = tmp / "models" / MODEL / "1"
    z = np.random.default_rng(0).standard_normal((1, latent), dtype=np.float32)
    rest_body = json.dumps({"instances": z.tolist()}).encode()
    predict_body = predict_request(MODEL, {"z": z}, "decode").SerializeToString()
    limit = ("--max-queue", "256")  # no request refused at 64 clients
    servers = {"genserve, batching off": ServerProcess(tmp / "models", "--disable-batching", *limit, rest=True,
                                                       poll_seconds=0),
               "genserve, batching on": ServerProcess(tmp / "models", *limit, rest=True, poll_seconds=0)}
    if args.rest_workers:
        workers = ("--rest-workers", str(args.rest_workers))
        for batching in ("off", "on"):
            servers[_workers_name(batching, args.rest_workers)] = ServerProcess(
                tmp / "models", *(("--disable-batching",) if batching == "off" else ()), *limit, *workers,
                rest=True, poll_seconds=0)
    if not args.genserve_only:
        servers["KServe, 1 worker"] = KServeProcess(args.kserve_python, version_dir, 1, tmp, tmp / "kserve-1.log")
        if args.kserve_workers > 1:
            servers[f"KServe, {args.kserve_workers} workers"] = KServeProcess(
                args.kserve_python, version_dir, args.kserve_workers, tmp, tmp / "kserve-n.log")
    try:
        for server in servers.values():
            server.start()
        for name, server in servers.items():
            if isinstance(server, KServeProcess):
                server.wait_ready(rest_body)
            else:
                server.wait_ready(MODEL)
        rest_ports = {name: s.http_port if isinstance(s, KServeProcess) else s.rest_port
                      for name, s in servers.items()}
        checks = {name: json.loads(rest_post(port, rest_body)[1])["predictions"] for name, port in rest_ports.items()}
        grpc_calls = {}
        for name, s in servers.items():
            if isinstance(s, KServeProcess):
                if s.workers == 1:  # KServe's gRPC server runs in its main process only
                    grpc_calls[name] = grpc_factory(f"127.0.0.1:{s.grpc_port}", V2_INFER, s.request_file.read_bytes())
            elif "REST workers" not in name:  # they change nothing for gRPC
                grpc_calls[name] = grpc_factory(s.target, PREDICT, predict_body)
        phases = {("REST", name): rest_factory(port, rest_body) for name, port in rest_ports.items()}
        phases.update({("gRPC", name): factory for name, factory in grpc_calls.items()})
        results: dict = {}
        for protocol in ("REST", "gRPC"):
            for n in clients:
                for _ in range(args.rounds):
                    for (proto, name), make_call in phases.items():
                        if proto == protocol:
                            r = run_clients(make_call, n, args.seconds, warmup=0.5)
                            results.setdefault((proto, n, name), []).append(r)
                            print(f"  {proto:<4} {n:>3} clients  {name:<22} {r['throughput']:8.0f} req/s  "
                                  f"p50 {r['p50_ms']:7.2f} ms  errors {r['errors']}", flush=True)
        rss = {name: tree_rss_mb(s.proc.pid) for name, s in servers.items()}  # with its worker processes
        rss["import tensorflow, genserve's venv"] = import_rss_mb(sys.executable)
        rss["import tensorflow as genserve's server does, genserve's venv"] = import_rss_mb(
            sys.executable, "from genserve.serving.loader import import_tensorflow; import_tensorflow()", str(ROOT))
        if not args.genserve_only:
            rss["import tensorflow, KServe's venv"] = import_rss_mb(args.kserve_python)
    finally:
        for server in servers.values():
            server.stop()
    return {key: pool(runs, args.seconds) for key, runs in results.items()}, rss, checks


def _workers_name(batching: str, workers: int) -> str:
    return f"genserve, batching {batching}, {workers} REST workers"


def pool(runs: list[dict], seconds: float) -> dict:
    """One row from its rounds: throughput over all rounds; p50/p99 of the pooled latencies would need
    the raw samples, so the medians of the rounds' percentiles are given."""
    return {"throughput": sum(r["requests"] for r in runs) / (seconds * len(runs)),
            "p50_ms": float(np.median([r["p50_ms"] for r in runs])),
            "p99_ms": float(np.median([r["p99_ms"] for r in runs])),
            "errors": sum(r["errors"] for r in runs)}


def report(results: dict, rss: dict, checks: dict, floor: dict | None, clients: list[int], args) -> None:
    reference = np.array(checks["genserve, batching off"], np.float32)
    print(f"\nVAE decode, z (1, 2) per request, untrained book-size VAE; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at the end; {args.seconds:g} s x {args.rounds} rounds per row, interleaved")
    for name, answer in checks.items():
        diff = float(np.max(np.abs(np.array(answer, np.float32) - reference)))
        print(f"  {name}: same images as genserve (max |diff| {diff:.2g})" if diff < 1e-4
              else f"  {name}: DIFFERENT images (max |diff| {diff:.2g})")
    print("\n| protocol | clients | server | p50 ms | p99 ms | req/s | errors |\n|---|---|---|---|---|---|---|")
    for (proto, n, name), r in results.items():
        print(f"| {proto} | {n} | {name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['throughput']:,.0f} | "
              f"{r['errors']} |")
    print("\n| server | RSS after load, MB, all its processes (KServe with workers: the parent, which serves gRPC, "
          "and each REST worker hold their own copy of the model; genserve's REST workers hold none) |\n|---|---|")
    for name, mb in rss.items():
        print(f"| {name} | {mb:,.0f} |")
    kserve = [name for name in rss if name.startswith("KServe")]
    floors = {name: rss.get(f"import tensorflow{how}, {venv}'s venv", float("nan")) for name, how, venv in
              [("genserve, batching on", " as genserve's server does", "genserve")] + [(k, "", "KServe") for k in kserve]}
    if kserve:
        one, many = kserve[0], kserve[-1]
        top = max(clients)

        def ratio(proto, n, ours, theirs, key):
            a, b = results.get((proto, n, ours)), results.get((proto, n, theirs))
            return a[key] / b[key] if a and b else float("nan")

        print("\n| measure (VAE decode, B=1) | genserve / KServe |\n|---|---|")
        rows = [(f"REST, 1 client, p50 — batching off vs {one}", "REST", 1, "off", one, "p50_ms", "lower is better"),
                (f"REST, 1 client, p50 — batching on vs {one}", "REST", 1, "on", one, "p50_ms", "lower is better"),
                (f"REST, {top} clients, req/s — batching on vs {one}", "REST", top, "on", one, "throughput", ""),
                (f"REST, {top} clients, req/s — batching off vs {many}", "REST", top, "off", many, "throughput", ""),
                (f"REST, {top} clients, req/s — batching on vs {many}", "REST", top, "on", many, "throughput", ""),
                (f"gRPC, 1 client, p50 — batching off vs {one}", "gRPC", 1, "off", one, "p50_ms", "lower is better"),
                (f"gRPC, {top} clients, req/s — batching on vs {one}", "gRPC", top, "on", one, "throughput", "")]
        if args.rest_workers:
            w = args.rest_workers
            rows[5:5] = [(f"REST, 1 client, p50 — batching off, {w} REST workers vs {one}", "REST", 1, f"off, {w}",
                          one, "p50_ms", "lower is better"),
                         (f"REST, {top} clients, req/s — batching off, {w} REST workers vs {many}", "REST", top,
                          f"off, {w}", many, "throughput", ""),
                         (f"REST, {top} clients, req/s — batching on, {w} REST workers vs {many}", "REST", top,
                          f"on, {w}", many, "throughput", "")]
        for label, proto, n, batching, theirs, key, note in rows:
            ours = f"genserve, batching {batching}" + (" REST workers" if "," in batching else "")
            value = ratio(proto, n, ours, theirs, key)
            print(f"| {label} | {value:.2f}{' (' + note + ')' if note else ''} |")
        print(f"| RSS after load vs {one} (one process, one copy of the model each) | "
              f"{rss['genserve, batching on'] / rss[one]:.2f} |")
        if args.rest_workers:
            name = _workers_name("on", args.rest_workers)
            print(f"| RSS after load, {args.rest_workers} REST workers (all processes) vs {many} (all processes) | "
                  f"{rss[name] / rss[many]:.2f} ({rss[name]:,.0f} vs {rss[many]:,.0f} MB) |")
        ours, theirs = (rss[name] - floors[name] for name in ("genserve, batching on", one))
        print(f"| RSS above `import tensorflow` vs {one} ({ours:,.0f} vs {theirs:,.0f} MB) | {ours / theirs:.2f} |")
    if floor is not None:
        ms, gen = floor["ms"], floor["gen"]
        print(f"\nfloor (predict_latency.measure): text step over gRPC {ms['step_grpc']:.3f} ms / (echo "
              f"{ms['echo']:.3f} + in-process step {ms['step_in_process']:.3f} ms) = {floor['step_ratio']:.2f} "
              f"(goal <= 1.25); client-side generation {gen['book']:.3f} s the book's way / {gen['ours']:.3f} s "
              f"= {floor['gen_ratio']:.1f}x (goal >= 10); a bare echo server running the step per call "
              f"{ms['step_echo']:.3f} ms = {floor['step_echo_ratio']:.2f} (the bound for a Python gRPC server); "
              f"a minimal server (decode, run, encode) with genserve's client {ms['step_minimal']:.3f} ms = "
              f"{floor['step_minimal_ratio']:.2f}; "
              f"genserve's server with the echo's raw-bytes client {ms['step_raw']:.3f} ms")


if __name__ == "__main__":
    main()
