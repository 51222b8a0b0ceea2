"""genserve's embedded model server: TF Serving's gRPC API over a models directory.

    genserve serve --models-dir out/models          # or, in Python:
    python -c "from genserve.serving.server import ModelServer; s = ModelServer('out/models', port=8500); s.start(); s.wait()"

A stand-in for `tensorflow_model_server`, never a more lenient one. The rooms:
- `loader.py`   SavedModel -> graph Session with the `serve` tag, one make_callable per signature;
- `execute.py`  request checks against the SignatureDef, admission limits, run by tensor names, warmup;
- `registry.py` which versions are served (models.config, version policy, polling, reload; no gRPC);
- `batching.py` TF Serving's batching session for versions with batching_params.pbtxt (enable_batching);
- `grpc_api.py` PredictionService / ModelService front end (status codes);
- this module   assembles them: threads, ports, the poller, graceful shutdown.

Errors follow TF Serving (servables/tensorflow/predict_util.cc, model_servers/server_core.cc): unknown
model or version -> NOT_FOUND; unknown label -> INVALID_ARGUMENT; unknown signature, missing or extra
input, wrong dtype or shape, unknown output_filter key, undecodable tensor -> INVALID_ARGUMENT; a
request beyond the admission limits -> RESOURCE_EXHAUSTED; a full per-model queue -> UNAVAILABLE;
graph errors keep their TF code (e.g. DEADLINE_EXCEEDED when the request's deadline, passed into
Session.run as TF Serving does, runs out).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import grpc

from genserve.repository import DOCKER_PREFIX
from genserve.repository import ConfigError, parse_models_config
from genserve.serving.errors import ServingError, short, truncate
from genserve.serving.execute import DEFAULT_LIMITS, ConcurrencyLimiter, Limits, predict
from genserve.serving.registry import ModelRegistry

log = logging.getLogger("genserve.serving")

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a 1024x1024x3 float32 tensor is 12 MiB
MAX_MESSAGE_BYTES = 2**31 - 1  # gRPC's limits are C ints
DEFAULT_POLL_SECONDS = 2.0


class _OneLineDeserializeErrors(logging.Filter):
    """grpcio logs an undecodable request ("Exception deserializing request!") with a full traceback;
    a hostile client could fill the log with them. Keep one line: the message and the error."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and "deserializ" in str(record.msg):
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(error).__name__}: {truncate(str(error), 200)})"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


_GRPC_LOG_FILTER = _OneLineDeserializeErrors()
logging.getLogger("grpc._server").addFilter(_GRPC_LOG_FILTER)
logging.getLogger("grpc._common").addFilter(_GRPC_LOG_FILTER)


class ModelServer:
    """TF-Serving-compatible gRPC server over a models directory (see the module docstring).

    Args:
        models_dir: the directory written by genserve.export.writer (or any TF Serving model tree).
        host: interface to bind; 127.0.0.1 by default, "0.0.0.0" opens it up.
        port: TCP port; 0 picks a free one (see `.port` after `start()`).
        poll_seconds: how often to look for new versions and models.config changes (<= 0: never).
        max_message_bytes: gRPC send/receive limit for both directions.
        max_workers: request threads.
        base_path_prefix: the Docker prefix of base_path in models.config, mapped to `models_dir`.
        allow_external_base_paths: serve base paths outside `models_dir` (off: refused).
        limits: admission limits (request elements, output bytes).
        max_concurrent: executions running at once per model; `max_queue` more may wait.
        max_request_seconds: Session.run timeout for a request without a deadline (0 = none).
        session_config: a ConfigProto for every Session (default loader.session_config()).
        enable_batching: batch the versions whose folder holds batching_params.pbtxt (TF Serving's
            --enable_batching --enable_per_model_batching_parameters); off by default as in
            tensorflow_model_server, on in `genserve serve` as in Dockerfile.serving.
        batch_threads: batch threads per batched version when its file sets no num_batch_threads.
        config_poll_seconds: how often to re-read models.config (None: at every version poll;
            0: once at start, TF Serving's --model_config_file_poll_wait_seconds default).
        rest_port: serve TF Serving's REST API on this port too (0: any free one, see `.rest_port`
            after `start()`; None: no REST server). See rest_api.py.
        prometheus_path: serve Prometheus metrics at this path of the REST port (None: none; TF
            Serving's MonitoringConfig, see metrics.py).
        ssl_config: serve gRPC over TLS: an SSLConfig message or the path of its text file (TF
            Serving's --ssl_config_file; see tls.py). None: plaintext. The REST port, if any, serves
            HTTPS with the same certificate.
    """

    def __init__(self, models_dir, host: str = "127.0.0.1", port: int = 0,
                 poll_seconds: float = DEFAULT_POLL_SECONDS,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, max_workers: int = 32,
                 base_path_prefix: str = DOCKER_PREFIX, allow_external_base_paths: bool = False,
                 limits: Limits = DEFAULT_LIMITS, max_concurrent: int = 4, max_queue: int = 16,
                 max_request_seconds: float = 300.0, session_config=None, enable_batching: bool = False,
                 batch_threads: int | None = None, config_poll_seconds: float | None = None,
                 rest_port: int | None = None, prometheus_path: str | None = None, ssl_config=None):
        if not 1 <= max_message_bytes <= MAX_MESSAGE_BYTES:
            raise ValueError(f"max_message_bytes must be between 1 and {MAX_MESSAGE_BYTES}")
        self.models_dir = Path(models_dir)
        self.host = host
        self.port = port
        self.poll_seconds = poll_seconds
        self.max_message_bytes = max_message_bytes
        self.max_workers = max_workers
        self.limits = limits
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.max_request_seconds = max_request_seconds
        self.registry = ModelRegistry(models_dir, base_path_prefix, allow_external_base_paths,
                                      session_config, on_load=self._on_load, on_unload=self._on_unload)
        self.enable_batching = enable_batching
        self.batch_threads = batch_threads
        self.config_poll_seconds = config_poll_seconds
        self._limiters: dict[str, ConcurrencyLimiter] = {}
        self._limiters_lock = threading.Lock()
        self._server = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self.observers: list = []  # observe(entrypoint, method, model, code, seconds) callbacks
        if rest_port is not None and rest_port != 0 and rest_port == port:
            raise ValueError(f"the REST port must differ from the gRPC port ({port})")
        if prometheus_path is not None and rest_port is None:
            raise ValueError("Prometheus metrics are served on the REST port: set rest_port")
        self.rest_port = rest_port
        self.prometheus_path = prometheus_path
        if ssl_config is not None:
            from genserve.serving.tls import read_ssl_config

            if not hasattr(ssl_config, "server_cert"):  # a path: read (and check) it now
                ssl_config = read_ssl_config(ssl_config)
        self.ssl_config = ssl_config
        self.metrics = None
        self._rest = None
        if prometheus_path is not None:
            from genserve.serving.metrics import ServingMetrics

            self.metrics = ServingMetrics()
            self.observers.append(self.metrics)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> int:
        """Load every model's served versions, bind, start serving and polling. Returns the port.

        Raises:
            FileNotFoundError: the models directory does not exist.
            ConfigError: models.config is malformed.
            OSError: the address cannot be bound.
        """
        from genserve.serving.grpc_api import add_services

        self.registry.refresh(strict=True)
        options = [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.so_reuseport", 0),  # fail loudly instead of sharing a port with another server
        ]
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.max_workers,
                                                        thread_name_prefix="genserve-rpc"),
                             options=options, maximum_concurrent_rpcs=self.max_workers * 4)
        add_services(server, self)
        self.port = self._bind(server)
        server.start()
        self._server = server
        if self.rest_port is not None:
            self._start_rest()
        self._stop.clear()
        if self.poll_seconds > 0 or (self.config_poll_seconds or 0) > 0:
            self._poller = threading.Thread(target=self._poll_loop, name="genserve-poll", daemon=True)
            self._poller.start()
        log.info("serving %d model(s) from %s on %s", len(self.registry.names()), self.models_dir, self.target)
        return self.port

    def _bind(self, server) -> int:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        try:
            if self.ssl_config is not None:
                from genserve.serving.tls import server_credentials

                port = server.add_secure_port(f"{host}:{self.port}", server_credentials(self.ssl_config))
            else:
                port = server.add_insecure_port(f"{host}:{self.port}")
        except RuntimeError as e:
            raise OSError(f"cannot listen on {host}:{self.port} ({e})") from None
        if port == 0:
            raise OSError(f"cannot listen on {host}:{self.port}")
        return port

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop polling and serving: new requests are refused at once, requests in flight get
        `grace` seconds (a bounded drain), then are cancelled."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=10)
            self._poller = None
        if self._rest is not None:
            self._rest.stop(grace)
            self._rest = None
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
        for name, versions in self.registry.loaded_versions().items():  # end the batch threads
            for version in versions:
                self._on_unload(self.registry.resolve(name, version))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops (or `timeout`); True when it has stopped."""
        return self._server is None or self._server.wait_for_termination(timeout)

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def __enter__(self) -> "ModelServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _poll_loop(self) -> None:
        """Version polls every poll_seconds; models.config re-read at each of them, or on its own
        schedule (config_poll_seconds > 0; such a poll also looks for versions), or never (0)."""
        never = float("inf")
        config_every = self.config_poll_seconds
        versions_at = time.monotonic() + (self.poll_seconds if self.poll_seconds > 0 else never)
        config_at = time.monotonic() + (config_every if config_every else never)
        while not self._stop.wait(max(0.0, min(versions_at, config_at) - time.monotonic())):
            now = time.monotonic()
            reread = config_every is None or now >= config_at
            try:
                self.registry.refresh(reread_config=reread)
            except Exception:  # never let the poller die
                log.exception("poll failed")
            if config_every and now >= config_at:
                config_at = now + config_every
            if now >= versions_at:
                versions_at = now + self.poll_seconds

    # -- models -----------------------------------------------------------------------------------
    def refresh(self, strict: bool = False) -> None:
        """One poll (see ModelRegistry.refresh)."""
        self.registry.refresh(strict)

    def loaded_versions(self) -> dict[str, list[int]]:
        """model name -> loaded versions (ascending)."""
        return self.registry.loaded_versions()

    def reload_config(self, config):
        """HandleReloadConfigRequest: serve exactly the models of a ModelServerConfig.

        Returns:
            A ReloadConfigResponse (OK) once the listed models are loaded.
        Raises:
            ServingError: INVALID_ARGUMENT for another config kind, a bad entry or a base path outside
                the models directory; the previous config stays in force.
        """
        from google.protobuf import text_format
        from tensorflow_serving.apis import model_management_pb2

        if config.WhichOneof("config") != "model_config_list":
            raise ServingError("INVALID_ARGUMENT", "ServerModelConfig type not supported by "
                                                   "HandleReloadConfigRequest. Only ModelConfigList is "
                                                   "currently supported")
        try:
            entries = parse_models_config(text_format.MessageToString(config), source="reload request")
            self.registry.reload_config(entries)
        except ConfigError as e:
            raise ServingError("INVALID_ARGUMENT", str(e)) from None
        missing = [e.name for e in entries if not self.registry.loaded_versions().get(e.name)]
        if missing:
            raise ServingError("UNAVAILABLE", f"no version of {', '.join(short(n) for n in missing)} "
                                              "could be loaded (see GetModelStatus)")
        return model_management_pb2.ReloadConfigResponse()

    def _on_load(self, loaded) -> None:
        if self.enable_batching:  # a bad batching_params.pbtxt fails the load, as on TF Serving
            from genserve.serving.batching import DEFAULT_NUM_BATCH_THREADS, Batcher, read_batching_params

            params = read_batching_params(loaded.path, self.batch_threads or DEFAULT_NUM_BATCH_THREADS)
            if params is not None:
                batcher = Batcher(params, f"{loaded.name}-{loaded.version}")
                loaded.extras["batcher"] = batcher
                loaded.extras["runner"] = batcher.runner
        for observer in self.observers:
            hook = getattr(observer, "on_load", None)
            if hook is not None:
                hook(loaded)

    def _on_unload(self, loaded) -> None:
        batcher = loaded.extras.get("batcher")
        if batcher is not None:  # queued requests still run; later ones run unbatched
            batcher.stop()

    def _limiter(self, name: str) -> ConcurrencyLimiter:
        limiter = self._limiters.get(name)
        if limiter is None:
            with self._limiters_lock:
                limiter = self._limiters.setdefault(name, ConcurrencyLimiter(self.max_concurrent,
                                                                             self.max_queue))
        return limiter

    # -- requests ---------------------------------------------------------------------------------
    def predict(self, request, response_cls, time_remaining: float | None = None):
        """Resolve, check, admit and run one PredictRequest (both front ends call this).

        Args:
            time_remaining: seconds left before the request's deadline (None: no deadline).
        Raises:
            ServingError: see the module docstring.
        """
        from genserve.serving.grpc_api import spec_choice

        spec = request.model_spec
        version, label = spec_choice(spec)
        loaded = self.registry.resolve(spec.name, version, label)
        if time_remaining is None and self.max_request_seconds > 0:
            time_remaining = self.max_request_seconds
        deadline = None if time_remaining is None else time.monotonic() + time_remaining

        def run():
            timeout_ms = 0
            if deadline is not None:
                timeout_ms = int((deadline - time.monotonic()) * 1000)
                if timeout_ms <= 0:
                    raise ServingError("DEADLINE_EXCEEDED", "deadline passed before the request ran")
            return predict(loaded.model, loaded.name, loaded.version, request, response_cls,
                           timeout_ms=timeout_ms, limits=self.limits,
                           runner=self._timed(loaded))

        if "batcher" in loaded.extras:  # its bounded batch queues are the admission control
            return run()
        return self._limiter(loaded.name).run(f"model {short(loaded.name)}", time_remaining, run)

    def _timed(self, loaded):
        """The version's runner, timed for `observe_runtime` observers (runtime_latency)."""
        runner = loaded.extras.get("runner")
        hooks = [o.observe_runtime for o in self.observers if hasattr(o, "observe_runtime")]
        if not hooks:
            return runner

        def timed(sig, arrays, keys, timeout_ms):
            start = time.perf_counter()
            result = (runner or _run_signature)(sig, arrays, keys, timeout_ms)
            for hook in hooks:
                hook(loaded.name, "Predict", time.perf_counter() - start)
            return result

        return timed

    def _start_rest(self) -> None:
        from genserve.serving.rest_api import RestServer

        context = None
        if self.ssl_config is not None:  # the same certificate as gRPC
            from genserve.serving.tls import server_ssl_context

            context = server_ssl_context(self.ssl_config)
        self._rest = RestServer(self, self.host, self.rest_port, self.max_message_bytes, self.metrics,
                                self.prometheus_path, self.max_workers, ssl_context=context)
        try:
            self.rest_port = self._rest.start()
        except BaseException:
            self._rest = None
            self._server.stop(0).wait()
            self._server = None
            raise

    @property
    def rest_target(self) -> str | None:
        """"HOST:PORT" of the REST server (None without one)."""
        if self.rest_port is None:
            return None
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.rest_port}"

    def observe(self, entrypoint: str, method: str, model: str, code: str, seconds: float) -> None:
        for observer in self.observers:
            observer.observe(entrypoint, method, model, code, seconds)

    def observe_grpc(self, method: str, code: str, seconds: float, model: str = "") -> None:
        if self.observers:
            self.observe("GRPC", method, model, code, seconds)


def _run_signature(sig, arrays, keys, timeout_ms):
    return sig.run(arrays, keys, timeout_ms)


@contextmanager
def serve(models_dir, poll_seconds: float = DEFAULT_POLL_SECONDS, **kwargs) -> Iterator[str]:
    """Run a ModelServer on 127.0.0.1, a free port, for the duration of a `with` block.

    Yields:
        The target "127.0.0.1:PORT" to connect to.
    """
    server = ModelServer(models_dir, poll_seconds=poll_seconds, **kwargs)
    port = server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=0.5)
