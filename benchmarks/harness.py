"""What the benchmarks, the tests and the demo scripts share to run a real server: a free loopback
port, `genserve serve` as a subprocess that is ready when its models are AVAILABLE, waiting for a model
version, and an interleaved timer. Imports no TensorFlow (the server runs in its own process).

    python -c "from benchmarks.harness import free_port; print(free_port())"   # from the repository root
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

GENSERVE = Path(sys.executable).with_name("genserve")


def openssl(*args: str, cwd: Path) -> None:
    """Run the `openssl` command in `cwd` (tests and the first-hour audit make throw-away certificates)."""
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_ca(folder: Path, name: str) -> None:
    """A self-signed EC P-256 CA valid 2 days: folder/NAME.pem and NAME.key."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}", cwd=folder)


def make_signed(folder: Path, name: str, ca: str, extensions: str) -> None:
    """NAME.pem/.key signed by the CA `ca` of the same folder, with `extensions` (e.g. a subjectAltName)."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
            f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
    (folder / f"{name}.ext").write_text(extensions + "\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=folder)


_HANDED_OUT: set[int] = set()  # ports free_port() already gave this process


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it), never one this process got
    before: the kernel hands a just-closed port out again (1-6 repeats in 300 calls here), and two
    servers started together then collide on it ("address already in use")."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_for_model(target: str, model: str, timeout: float = 60.0, min_version: int = 1,
                   alive=lambda: True) -> int:
    """Poll GetModelStatus until `model` has an AVAILABLE version >= min_version; return that version.

    Raises:
        TimeoutError: with the last answer, when `timeout` seconds pass first.
        RuntimeError: when `alive()` turns False (the server process exited).
    """
    from genserve.clients import Client, GenserveError

    deadline = time.monotonic() + timeout
    last = "no answer"
    with Client(target, timeout=5.0) as client:
        while time.monotonic() < deadline:
            if not alive():
                raise RuntimeError(f"the server for {target} exited ({last})")
            try:
                versions = client.status(model)
                ready = [v for v, state in versions if state == "AVAILABLE" and v >= min_version]
                if ready:
                    return max(ready)
                last = f"versions {versions}"
            except GenserveError as e:
                last = str(e)
            time.sleep(0.2)
    raise TimeoutError(f"{model} not available on {target} after {timeout:.0f} s ({last})")


class ServerProcess:
    """`genserve serve --models-dir DIR` on a free loopback port, in its own process.

        with ServerProcess(models, "--disable-batching") as server:
            server.wait_ready("toy")
            ... Client(server.target) ...
    """

    def __init__(self, models_dir, *extra: str, port: int | None = None, rest: bool = False,
                 log: Path | None = None, poll_seconds: float = 0.5):
        self.models_dir = Path(models_dir)
        self.port = port or free_port()
        self.rest_port = free_port() if rest else None
        self.extra = list(extra)
        self.log = log
        self.poll_seconds = poll_seconds
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def rest_target(self) -> str | None:
        return f"127.0.0.1:{self.rest_port}" if self.rest_port else None

    def command(self) -> list[str]:
        cmd = [str(GENSERVE), "serve", "--models-dir", str(self.models_dir), "--port", str(self.port),
               "--poll-seconds", str(self.poll_seconds)]
        if self.rest_port:
            cmd += ["--rest-port", str(self.rest_port)]
        return cmd + self.extra

    def start(self) -> "ServerProcess":
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        out = open(self.log, "a") if self.log else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, env=env)
        finally:
            if self.log:
                out.close()
        self.starts += 1
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, *models: str, timeout: float = 120.0) -> float:
        """Wait until every model in `models` is AVAILABLE; returns the seconds it took."""
        start = time.monotonic()
        for model in models:
            wait_for_model(self.target, model, timeout=max(1.0, timeout - (time.monotonic() - start)),
                           alive=self.alive)
        return time.monotonic() - start

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (the server drains), then SIGKILL after `timeout`; returns the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def rounds(fns: dict, calls: int, n_rounds: int | None = None, warmup: int = 30) -> dict:
    """Median milliseconds of each fn, the fns interleaved in `n_rounds` rounds (default: twice the
    number of fns) of calls/n_rounds calls each, so drift on a busy machine hits every fn alike. The
    rounds take their orders from `balanced_orders`, so every fn runs right after every other fn equally
    often: the row before a fn moves its time (one Client.predict step measured 0.824 ms right after
    another server's rows and 0.749 ms right after the same server's, in one step_ab.py run; a fn run
    right after an in-process TensorFlow call up to 20 % slower), and a fixed order, or the same order
    rotated, puts one fn behind the same neighbour in nearly every round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    orders = balanced_orders(list(fns))
    n_rounds = n_rounds or len(orders) * -(-2 * len(fns) // len(orders))
    per = max(1, calls // n_rounds)
    for turn in range(n_rounds):
        for name in orders[turn % len(orders)]:
            fn = fns[name]
            for _ in range(per):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def balanced_orders(items: list) -> list[list]:
    """Orders of `items` in which every item comes right after every other item equally often, and
    takes every position equally often: a Williams design (E. J. Williams, "Experimental designs
    balanced for the estimation of residual effects of treatments", Australian Journal of Scientific
    Research, 1949). len(items) orders when that is even (each ordered pair adjacent once); twice as
    many when odd (each order also reversed; each pair adjacent twice)."""
    n = len(items)
    if n < 2:
        return [list(items)]
    first = [0] + [(j + 1) // 2 if j % 2 else n - j // 2 for j in range(1, n)]  # 0, 1, n-1, 2, n-2, ...
    orders = [[items[(i + shift) % n] for i in first] for shift in range(n)]
    if n % 2:
        orders += [order[::-1] for order in orders]
    return orders


def export_untrained_text(models_dir, workdir, cfg=None, alphabet: str | None = None) -> Path:
    """A char-LSTM with random weights (TextConfig `cfg`, default the book's) over `alphabet`'s
    characters, its checkpoint written into `workdir` and exported into `models_dir`. Imports TF.
    Returns the version folder."""
    from genserve.data.text import Vocabulary
    from genserve.export.text import export_text
    from genserve.training import text as training

    cfg = cfg or training.TextConfig()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    vocab = Vocabulary.from_text(alphabet or "abcdefghijklmnopqrstuvwxyz !\"'(),-.:;?\n0123456789&[]_")
    (workdir / training.CONFIG_FILE).write_text(cfg.to_json())
    (workdir / training.VOCAB_FILE).write_text(vocab.to_json())
    training.save_model_atomic(training.build_model(cfg, len(vocab)), workdir / training.BEST_FILE)
    return export_text(workdir, models_dir)


def export_untrained_vae(models_dir, workdir, cfg=None, version: int | None = None) -> Path:
    """A VAE with random weights (VAEConfig `cfg`, default the book's), its checkpoint written into
    `workdir` and exported into `models_dir`. Imports TF. Returns the version folder."""
    from genserve.export.vae import export_vae
    from genserve.training import vae as training

    cfg = cfg or training.VAEConfig()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model = training.new_model(cfg)
    (workdir / training.CONFIG_FILE).write_text(cfg.to_json())
    model.encoder.save_weights(workdir / training.BEST_ENCODER)
    model.decoder.save_weights(workdir / training.BEST_DECODER)
    return export_vae(workdir, models_dir, version=version)
