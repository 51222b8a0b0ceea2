"""genserve's embedded model server: TF Serving's gRPC API over a models directory.

    genserve serve --models-dir models          # or, in Python:
    python -c "from genserve.serving.server import ModelServer; s = ModelServer('models', port=8500); s.start(); s.wait()"

A stand-in for `tensorflow_model_server`, never a more lenient one. The rooms:
- `loader.py`   SavedModel -> graph Session with the `serve` tag, one TF_SessionRun per request;
- `execute.py`  request checks against the SignatureDef, run by tensor names, warmup;
- `registry.py` which versions are served (models.config, version policy, polling, reload; no gRPC);
- `batching.py` TF Serving's batching session for versions with batching_params.pbtxt (enable_batching);
- `service.py`  predict / metadata / status / reload without a transport; per-model admission (`gate.py`);
- `grpc_api.py` and `rest_api.py`  the two front ends, translators onto the service (REST's HTTP side
                in `rest_http.py`, optionally in worker processes: `rest_workers.py`, `rest_worker.py`);
- `options.py`  every default;
- `health.py`   readiness: grpc.health.v1 (--enable-grpc-healthcheck-service) and GET /v1/health/ready;
- this module   assembles them: ports (bound before the models load), the poller, a bounded drain
                of both front ends at once.
docs/serving.md lists every module.

Errors follow TF Serving (servables/tensorflow/predict_util.cc, model_servers/server_core.cc): unknown
model or version -> NOT_FOUND; unknown label -> INVALID_ARGUMENT; unknown signature, missing or extra
input, wrong dtype or shape, unknown output_filter key, undecodable tensor -> INVALID_ARGUMENT; a
request beyond the admission limits -> RESOURCE_EXHAUSTED; a full per-model queue -> UNAVAILABLE, as is
every request after stop() (SIGTERM) began;
graph errors keep their TF code (e.g. DEADLINE_EXCEEDED when the request's deadline, passed into
Session.run as TF Serving does, runs out).
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from genserve.serving.health import Health
from genserve.serving.memory import IdleTrim
from genserve.serving.options import ServerOptions
from genserve.serving.registry import ModelRegistry
from genserve.serving.service import ModelService

log = logging.getLogger("genserve.serving")


class ModelServer:
    """TF-Serving-compatible gRPC (and optionally REST) server over a models directory.

    Args:
        models_dir: the directory written by genserve.export.writer (or any TF Serving model tree).
        options: a ServerOptions (see options.py for every field and its default).
        **changes: fields of ServerOptions to change, e.g. `ModelServer(d, poll_seconds=0, rest_port=0)`.
    Raises:
        ValueError: an option out of range; TlsConfigError: a bad ssl_config file.
    """

    def __init__(self, models_dir, options: ServerOptions | None = None, **changes):
        options = (options or ServerOptions()).replace(**changes)
        if options.ssl_config is not None and not hasattr(options.ssl_config, "server_cert"):
            from genserve.serving.tls import read_ssl_config  # a path: read (and check) it now

            options = options.replace(ssl_config=read_ssl_config(options.ssl_config))
        self.options = options
        self.models_dir = Path(models_dir)
        self.host, self.port, self.rest_port = options.host, options.port, options.rest_port
        # Readiness, updated after every registry refresh; the gRPC service only with the flag.
        self.health = Health()
        self.registry = ModelRegistry(models_dir, options.base_path_prefix, options.allow_external_base_paths,
                                      options.session_config, loop_threads=loop_threads(options),
                                      on_load=self._on_load, on_unload=self._on_unload,
                                      on_refresh=self._update_health)
        self.observers: list = []  # observe(entrypoint, method, model, code, seconds) callbacks
        self.service = ModelService(self.registry, options, self.observers)
        self.metrics = None
        if options.prometheus_path is not None:
            from genserve.serving.metrics import IN_FLIGHT, ServingMetrics

            self.metrics = ServingMetrics()
            self.metrics.gauges[IN_FLIGHT] = ("Predict requests admitted and not yet answered.",
                                              lambda: self.service.inflight)
            self.observers.append(self.metrics)
        self._grpc = None
        self._rest = None
        self.trim = IdleTrim(lambda: (self.service.begun, self.service.inflight), options.idle_trim_seconds)
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self.polls = 0  # polls completed (tests wait on it)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> int:
        """Bind both ports and start serving, then load every model's served versions, then poll.
        Returns the gRPC port.

        The ports come first, so a port already taken fails at once, before any model loads (loading can
        take seconds per model). While the models load, health says NOT_SERVING (GET /v1/health/ready:
        503), a request for a model answers UNAVAILABLE (REST: 503; TF Serving's clients see UNAVAILABLE
        then too, its ports being closed until this load ends; ModelService.resolve) and GetModelStatus
        shows the version being loaded as LOADING.

        Raises:
            FileNotFoundError: the models directory does not exist.
            ConfigError: models.config is malformed.
            OSError: the address cannot be bound.
        (On any of them both ports are closed again.)
        """
        from genserve.serving.grpc_api import GrpcServer

        credentials = None
        if self.options.ssl_config is not None:
            from genserve.serving.tls import server_credentials

            credentials = server_credentials(self.options.ssl_config)
        health = self.health if self.options.enable_grpc_healthcheck_service else None
        self._grpc = GrpcServer(self.service, f"{_bracketed(self.host)}:{self.port}", self.options, credentials,
                                health)
        try:
            self.port = self._grpc.start()
            if self.rest_port is not None:
                self._start_rest()
            self.registry.refresh(strict=True)
            if hasattr(self._rest, "wait_ready"):  # REST worker processes, started beside the load
                self._rest.wait_ready()
        except BaseException:
            for front in (self._rest, self._grpc):
                if front is not None:
                    front.stop(0)
            self._grpc = self._rest = None
            raise
        self._stop.clear()
        self.trim.start()  # its first trim: what the start-up load freed
        if self.options.poll_seconds > 0 or (self.options.config_poll_seconds or 0) > 0:
            self._poller = threading.Thread(target=self._poll_loop, name="genserve-poll", daemon=True)
            self._poller.start()
        log.info("serving %d model(s) from %s on %s", len(self.registry.names()), self.models_dir, self.target)
        return self.port

    def _start_rest(self) -> None:
        from genserve.serving.rest_api import LocalBackend

        options = self.options
        backend = LocalBackend(self.service, self.health, self.metrics)
        if options.rest_workers:
            from genserve.serving.rest_workers import RestWorkers

            ssl_text = None
            if options.ssl_config is not None:
                from genserve.serving.tls import ssl_config_text

                ssl_text = ssl_config_text(options.ssl_config)
            rest = RestWorkers(backend, self.host, self.rest_port, options.rest_workers, dict(
                max_body_bytes=options.max_message_bytes, body_timeout=options.body_timeout_seconds,
                cors=options.enable_cors_support, metrics_path=options.prometheus_path,
                ready_endpoint=True, ssl_config=ssl_text), max_threads=options.max_concurrent_rpcs)
        else:
            from genserve.serving.rest_http import RestServer

            context = None
            if options.ssl_config is not None:  # the same certificate as gRPC
                from genserve.serving.tls import server_ssl_context

                context = server_ssl_context(options.ssl_config)
            rest = RestServer(backend, self.host, self.rest_port, options.max_message_bytes,
                              options.prometheus_path, ssl_context=context,
                              body_timeout=options.body_timeout_seconds, cors=options.enable_cors_support)
        self.rest_port = rest.start()
        self._rest = rest

    def begin_drain(self) -> None:
        """The first moment of a drain (SIGTERM): health NOT_SERVING for good, then every new call is
        answered UNAVAILABLE (503) by the service itself; the ports stay open until stop()."""
        self.health.start_drain()
        self.service.close()

    def stop(self, grace: float | None = 1.0) -> None:
        """Refuse new requests at once on both front ends (UNAVAILABLE / 503), give requests in flight
        `grace` seconds on both front ends at once (a bounded drain), then cancel what is left.
        Returns within about `grace` + 1 s."""
        self.begin_drain()
        self._stop.set()
        deadline = time.monotonic() + (grace or 0.0)
        self.service.wait_idle(grace or 0.0)  # both front ends' Predicts drain together
        left = max(0.0, deadline - time.monotonic())
        fronts = [threading.Thread(target=front.stop, args=(left,), name="genserve-drain")
                  for front in (self._grpc, self._rest) if front is not None]
        for thread in fronts:
            thread.start()
        for thread in fronts:
            thread.join()
        self._grpc = self._rest = None
        self.trim.stop()
        if self._poller is not None:
            self._poller.join(timeout=10)
            self._poller = None
        for name, versions in self.registry.loaded_versions().items():  # end the batch threads
            for version in versions:
                self._on_unload(self.registry.resolve(name, version), timeout=0.1)
        self.service.shutdown()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops (or `timeout`); True when it has stopped."""
        return self._grpc is None or self._grpc.wait(timeout)

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def rest_target(self) -> str | None:
        """"HOST:PORT" of the REST server (None without one)."""
        return None if self.rest_port is None else f"{_bracketed(self.host)}:{self.rest_port}"

    def __enter__(self) -> "ModelServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _poll_loop(self) -> None:
        """Version polls every poll_seconds; models.config re-read at each of them, or on its own
        schedule (config_poll_seconds > 0; such a poll also looks for versions), or never (0)."""
        never = float("inf")
        poll_every, config_every = self.options.poll_seconds, self.options.config_poll_seconds
        versions_at = time.monotonic() + (poll_every if poll_every > 0 else never)
        config_at = time.monotonic() + (config_every if config_every else never)
        while not self._stop.wait(max(0.0, min(versions_at, config_at) - time.monotonic())):
            now = time.monotonic()
            reread = config_every is None or now >= config_at
            try:
                self.registry.refresh(reread_config=reread)
            except Exception:  # never let the poller die
                log.exception("poll failed")
            self.polls += 1
            if config_every and now >= config_at:
                config_at = now + config_every
            if now >= versions_at:
                versions_at = now + poll_every

    # -- models -----------------------------------------------------------------------------------
    def loaded_versions(self) -> dict[str, list[int]]:
        """model name -> loaded versions (ascending)."""
        return self.registry.loaded_versions()

    def reload_config(self, config):
        """HandleReloadConfigRequest (see ModelService.reload)."""
        return self.service.reload(config)

    def _update_health(self) -> None:
        """After each refresh: ready when every configured model has a loaded (AVAILABLE) version."""
        self.health.update(self.registry.names(), self.registry.loaded_versions())

    def _on_load(self, loaded) -> None:
        if self.options.enable_batching:  # a bad batching_params.pbtxt fails the load, as on TF Serving
            from genserve.serving.batching import DEFAULT_NUM_BATCH_THREADS, Batcher, read_batching_params

            params = read_batching_params(loaded.path, self.options.batch_threads or DEFAULT_NUM_BATCH_THREADS)
            if params is not None:
                batcher = Batcher(params, f"{loaded.name}-{loaded.version}")
                loaded.extras["batcher"] = batcher
        for observer in self.observers:
            hook = getattr(observer, "on_load", None)
            if hook is not None:
                hook(loaded)

    def _on_unload(self, loaded, timeout: float = 10.0) -> None:
        batcher = loaded.extras.get("batcher")
        if batcher is not None:  # queued requests still run; later ones run unbatched
            batcher.stop(timeout)


def loop_threads(options: ServerOptions) -> int:
    """Inter-op threads of each version's own pool for signatures with loops (tf_session.LOOP_POOL): as
    many as the runs it admits at once (--max-concurrent unbatched, its batch threads batched), so
    no admitted run waits for a thread another run holds."""
    from genserve.serving.batching import DEFAULT_NUM_BATCH_THREADS

    return max(options.max_concurrent, options.batch_threads or DEFAULT_NUM_BATCH_THREADS)


def _bracketed(host: str) -> str:
    """An IPv6 literal in brackets, for "HOST:PORT"."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@contextmanager
def serve(models_dir, **changes) -> Iterator[str]:
    """Run a ModelServer on 127.0.0.1, a free port, for the duration of a `with` block.

    Args:
        **changes: ServerOptions fields (e.g. poll_seconds=0).
    Yields:
        The target "127.0.0.1:PORT" to connect to.
    """
    server = ModelServer(models_dir, **changes)
    port = server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=0.5)
