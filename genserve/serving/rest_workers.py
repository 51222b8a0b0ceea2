"""REST worker processes (`genserve serve --rest-workers N`), seen from the server process.

    server = ModelServer("models", rest_port=8501, rest_workers=2)   # or: genserve serve ... --rest-workers 2

The server process binds the REST port itself (so a taken port fails as before and port 0 works), then
starts N worker processes (rest_worker.py) that share the listening socket(s) and do the HTTP, TLS and
JSON writing; each forwards its requests over its own Unix socket pair. Here a thread per channel reads
the requests and hands each to a thread of its own (a pool grown on demand up to
--max-concurrent-rpcs' count, as the gRPC server runs its calls), which runs it with
rest_api.LocalBackend.handle_blocking: the same routing, version resolution, admission (a request
waiting for its model holds only its own thread: one busy model never stalls another), metrics and
error bodies as the in-process REST server, and the answer goes back on the channel.

Why: the model process's Python (JSON, HTTP, protobuf) holds one GIL while TensorFlow's kernels run
outside it; the workers move the HTTP and response-JSON part onto other cores (benchmarks/README.md,
"Session 5", has the measurements).

Lifecycle: stop(grace) sends every worker a DRAIN frame: it stops accepting, gives its requests in
flight `grace` seconds (the server process answers them meanwhile; the service is already closed, so
new requests on open connections get 503, as in process) and exits; one still alive after grace + 5 s
is killed. A worker whose channel closes exits at once, so none outlives a SIGKILLed server process;
a worker that dies after it served is replaced by a new one.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from genserve.serving.errors import error_json, truncate
from genserve.serving.hot_pool import HotThreadPool
from genserve.serving.json_tensor import COLUMNAR
from genserve.serving.rest_worker import (
    ANSWER, ANSWER_STATUS, CONFIG, DRAIN, HEADER, METRICS, OBSERVE, PREDICTION, READY, REQUEST, frame,
    parse_request,
)

log = logging.getLogger("genserve.serving")
START_SECONDS = 60.0  # a worker must be serving within this (it imports aiohttp, numpy, protobuf)
BACKLOG = 128  # aiohttp's default


def listen(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address of `host` (as asyncio's create_server binds them; SO_REUSEADDR,
    no SO_REUSEPORT, so a port another server holds fails). Port 0: one free port for all of them.

    Raises:
        OSError: an address cannot be bound.
    """
    sockets: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        seen = set()
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(BACKLOG)
    except (OSError, UnicodeError):
        for sock in sockets:
            sock.close()
        raise
    return sockets


class _Worker:
    """One worker process and the server process's end of its channel."""

    def __init__(self, proc: subprocess.Popen, channel: socket.socket):
        self.proc, self.channel = proc, channel
        self.ready = threading.Event()
        self._send = threading.Lock()
        self.reader: threading.Thread | None = None

    def send(self, data: bytes) -> None:
        try:
            with self._send:
                self.channel.sendall(data)
        except OSError:  # the worker is gone; its connections went with it
            pass


class RestWorkers:
    """The REST port served by `count` worker processes over `backend` (rest_api.LocalBackend).

    Args:
        config: what every worker needs (rest_worker.main): max_body_bytes, body_timeout, cors,
            metrics_path, ready_endpoint, ssl_config (SSLConfig text or None).
        max_threads: threads that may run requests at once here (made on demand).
    """

    def __init__(self, backend, host: str, port: int, count: int, config: dict, max_threads: int = 1024):
        if count < 1:
            raise ValueError("REST workers: count must be >= 1")
        self.backend, self.host, self.port, self.count = backend, host, port, count
        self.config = {**config, "log_level": logging.getLogger().getEffectiveLevel()}
        self._pool = HotThreadPool(max_threads, thread_name_prefix="genserve-rest")
        self._sockets: list[socket.socket] = []
        self.workers: list[_Worker] = []
        self._stopping = False
        self._lock = threading.Lock()  # `workers` is replaced under it (a worker that died, stop())

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers]

    def start(self) -> int:
        """Bind and start the workers (they serve once `wait_ready` returns). Returns the bound port.

        Raises:
            OSError: the address cannot be bound.
        """
        try:
            self._sockets = listen(self.host, self.port)
        except OSError as e:
            raise OSError(f"cannot listen on {self.host}:{self.port} for REST ({e.strerror or e})") from None
        self.port = self._sockets[0].getsockname()[1]
        for _ in range(self.count):
            self.workers.append(self._spawn())
        return self.port

    def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = [s.fileno() for s in self._sockets] + [theirs.fileno()]
        argv = [sys.executable, "-m", "genserve.serving.rest_worker"]
        if threading.current_thread() is threading.main_thread():  # PDEATHSIG follows the starting thread
            argv += ["--pdeathsig", str(os.getpid())]
        root = str(Path(__file__).resolve().parents[2])  # the genserve this process runs, not another one
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        try:
            proc = subprocess.Popen(argv + [str(fd) for fd in fds], pass_fds=fds, env=env, stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        worker = _Worker(proc, ours)
        worker.send(frame(0, CONFIG, json.dumps(self.config).encode()))
        worker.reader = threading.Thread(target=self._read, args=(worker,), name=f"genserve-rest-chan-{proc.pid}",
                                         daemon=True)
        worker.reader.start()
        return worker

    def wait_ready(self, timeout: float = START_SECONDS) -> None:
        """Block until every worker serves.

        Raises:
            OSError: a worker exited or did not start within `timeout` (the workers are stopped).
        """
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            while not worker.ready.wait(0.05):
                code = worker.proc.poll()
                if code is not None or time.monotonic() > deadline:
                    self.stop(0)
                    what = f"exited with code {code}" if code is not None else f"did not start in {timeout:g} s"
                    raise OSError(f"a REST worker process {what} (see its log above)")

    # -- the channels -----------------------------------------------------------------------------
    def _read(self, worker: _Worker) -> None:
        source = worker.channel.makefile("rb", buffering=1 << 16)
        try:
            while True:
                header = source.read(HEADER.size)
                if len(header) < HEADER.size:
                    break
                rid, kind, size = HEADER.unpack(header)
                payload = source.read(size) if size else b""
                if kind == REQUEST:
                    self._submit(self._answer, worker, rid, payload)
                elif kind == METRICS:
                    self._submit(self._metrics, worker, rid)
                elif kind == OBSERVE:
                    code, seconds = payload.decode().split("\0")
                    self.backend.observe(code, float(seconds))
                elif kind == READY:
                    worker.ready.set()
        except (OSError, ValueError):
            pass
        if self._stopping:
            return
        code = worker.proc.wait()
        if not worker.ready.is_set():  # it never served: starting another would fail the same way
            log.error("REST worker process %d ended at start (exit code %s)", worker.proc.pid, code)
            return
        log.error("REST worker process %d ended (exit code %s); starting another", worker.proc.pid, code)
        with self._lock:
            if not self._stopping:
                self.workers[self.workers.index(worker)] = self._spawn()

    def _submit(self, fn, *args) -> None:
        try:
            self._pool.submit(fn, *args)
        except RuntimeError:  # shut down: the worker's request is dropped with its connection
            pass

    def _answer(self, worker: _Worker, rid: int, payload: bytes) -> None:
        method, path, remote, body = parse_request(payload)
        try:
            status, output = self.backend.handle_blocking(method, path, body, remote, raw=True)
        except Exception as e:  # a bug: the worker's client must still get an answer
            log.exception("REST worker request %s %s failed", method, path[:200])
            status, output = 500, error_json(truncate(f"internal error: {type(e).__name__}: {e}"))
        if isinstance(output, tuple):
            fmt, data = output
            worker.send(frame(rid, PREDICTION, (b"c" if fmt == COLUMNAR else b"r") + data))
        else:
            worker.send(frame(rid, ANSWER, ANSWER_STATUS.pack(status) + output.encode("utf-8")))

    def _metrics(self, worker: _Worker, rid: int) -> None:
        page, content_type = self.backend.metrics_page()
        worker.send(frame(rid, METRICS, content_type.encode() + b"\0" + page))

    # -- lifecycle --------------------------------------------------------------------------------
    def stop(self, grace: float | None = 1.0) -> None:
        """Drain and end every worker (see the module docstring); returns within about grace + 5 s."""
        grace = grace or 0.0
        with self._lock:
            self._stopping = True
        for worker in self.workers:
            worker.send(frame(0, DRAIN, repr(float(grace)).encode()))
        deadline = time.monotonic() + grace + 5
        for worker in self.workers:
            try:
                worker.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("REST worker process %d did not drain in time: killed", worker.proc.pid)
                worker.proc.kill()
                worker.proc.wait()
        for sock in self._sockets:
            sock.close()
        for worker in self.workers:
            worker.channel.close()  # wakes its reader (end of file)
            if worker.reader is not None:
                worker.reader.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.workers = []
