"""The serving core without a transport: predict, metadata, status, reload and ModelSpec parsing.

    python -c "from genserve.serving.server import ModelServer
    s = ModelServer('models'); s.registry.refresh(strict=True)
    print(s.service.status(s.service.spec('toy')))"

Both front ends call this one object and only translate (grpc_api.py: protobuf in, status codes out;
rest_api.py: JSON in and out), as TF Serving's `*_impl.cc` files serve `prediction_service_impl.cc` and
`http_rest_api_handler.cc`, and KServe's `protocol/dataplane.py` serves its gRPC and REST endpoints. A
request's ModelSpec is resolved to one loaded version ONCE (`resolve`), and everything after that
(dtypes, run, response) uses that version, even if a newer one is swapped in meanwhile.

Isolation. Each model has its own gate (ModelGate): at most `max_concurrent` runs at once and
`max_queue` more waiting; the next request is refused with UNAVAILABLE at once (TF Serving's batch
queues answer the same when full). A waiting request never holds a thread another model needs: a gRPC
call waits on a thread of its own, made on demand (grpc_api.py says why not grpc.aio), and a REST call
is a Future awaited on the REST event loop while the model's own threads run it. With the earlier
design (blocking handlers on one shared pool of 32 gRPC threads), flooding two models within their
own limits (20 + 20 requests) made a third model's 1-row Predict wait 3.47 s median; now 5 ms median,
30 ms max, and the 21st request is refused at once (tests/test_service.py; docs/serving.md). Batched
versions hand their decoded inputs to the batcher and wait on its Future.

Shutdown: `close()` makes every later call answer UNAVAILABLE ("the server is shutting down") on both
front ends at once; the server then drains both front ends in parallel (server.py).
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from concurrent import futures

from genserve.serving import execute
from genserve.serving.errors import ServingError, short, truncate
from genserve.serving.gate import ModelGate
from genserve.serving.hot_pool import HotThreadPool
from genserve.serving.memory import limit_malloc_arenas
from genserve.serving.options import ServerOptions

SHUTTING_DOWN = "the server is shutting down; retry on another replica"


def spec_choice(model_spec) -> tuple[int | None, str | None]:
    """(version, label) of a ModelSpec; (None, None) for the latest."""
    choice = model_spec.WhichOneof("version_choice")
    if choice == "version":
        return model_spec.version.value, None
    if choice == "version_label":
        return None, model_spec.version_label
    return None, None


class ModelService:
    """Predict, GetModelMetadata, GetModelStatus and ReloadConfig over a ModelRegistry.

    Args:
        registry: the served models (registry.ModelRegistry).
        options: the server's options (admission limits, request timeout, worker threads).
        observers: objects with `observe(entrypoint, method, model, code, seconds)` and optionally
            `observe_runtime(model, api, seconds)` (metrics); the list may grow after start.
    """

    def __init__(self, registry, options: ServerOptions, observers: list | None = None):
        self.registry = registry
        self.options = options
        self.observers = observers if observers is not None else []
        self.closing = False
        self.inflight = 0  # Predict calls admitted and not yet answered (tests wait on it)
        self.begun = 0  # Predict calls begun so far (memory.IdleTrim watches it)
        self._gates: dict[str, ModelGate] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when inflight drops to 0
        self._idle_waiters = 0  # threads in wait_idle
        self.work = HotThreadPool(options.max_workers, thread_name_prefix="genserve-work")
        limit_malloc_arenas()  # before the serving threads allocate (memory.MALLOC_ARENAS says why)

    # -- ModelSpec --------------------------------------------------------------------------------
    @staticmethod
    def spec(name: str, version: int | None = None, label: str | None = None):
        """A ModelSpec from REST path parts."""
        from tensorflow_serving.apis import model_pb2

        spec = model_pb2.ModelSpec(name=name)
        if version is not None:
            spec.version.value = version
        if label is not None:
            spec.version_label = label
        return spec

    def resolve(self, model_spec):
        """The one loaded version a request's ModelSpec names (latest, number or label). Raises
        ServingError: UNAVAILABLE while shutting down or before start-up's first load has finished (TF
        Serving's ports are closed then, so its clients see UNAVAILABLE too, and retry), NOT_FOUND,
        INVALID_ARGUMENT (label)."""
        self._check_open()
        version, label = spec_choice(model_spec)
        try:
            return self.registry.resolve(model_spec.name, version, label)
        except ServingError as e:
            if e.code != "NOT_FOUND" or self.registry.refreshed.is_set():
                raise
            raise ServingError("UNAVAILABLE", f"{e}; the server is still loading its models") from None

    # -- Predict ---------------------------------------------------------------------------------
    def _begin(self, request, time_remaining, loaded):
        """(loaded version, deadline, gate) of one Predict; counts it in flight."""
        if loaded is None:
            loaded = self.resolve(request.model_spec)
        self._check_open()
        if time_remaining is None and self.options.max_request_seconds > 0:
            time_remaining = self.options.max_request_seconds
        deadline = None if time_remaining is None else time.monotonic() + time_remaining
        with self._lock:
            self.inflight += 1
            self.begun += 1
        return loaded, deadline, self._gate(loaded.name)

    def _end(self) -> None:
        with self._lock:
            self.inflight -= 1
            if self._idle_waiters and not self.inflight:
                self._idle.notify_all()

    def wait_idle(self, timeout: float | None) -> bool:
        """Block until no Predict is in flight (or `timeout` seconds); True when idle."""
        with self._idle:
            self._idle_waiters += 1
            try:
                return self._idle.wait_for(lambda: self.inflight == 0, timeout)
            finally:
                self._idle_waiters -= 1

    def predict_blocking(self, request, time_remaining: float | None = None, loaded=None,
                         serialized: bool = False, arrays: dict | None = None):
        """Predict on the calling thread (the gRPC front end: one thread per call, made on demand).

        Args, Raises: as `predict`; serialized: answer the PredictResponse's bytes (what gRPC sends);
            arrays: the input values, already decoded (`request` then gives everything else; the
            gRPC front end's predict_bytes.Templates).
        Returns: a tensorflow.serving.PredictResponse, or its bytes.
        """
        loaded, deadline, gate = self._begin(request, time_remaining, loaded)
        respond = execute.respond_bytes if serialized else execute.respond
        try:
            batcher = loaded.extras.get("batcher")
            if batcher is None:  # the gate is the admission control
                gate.admit()
                try:
                    return gate.run(deadline, self._run, loaded, request, deadline, respond, arrays)
                finally:
                    gate.release()
            sig, arrays, keys = self._prepare(loaded, request, arrays)
            result = self._batched(loaded, batcher.submit(sig, arrays, keys, self._batch_timeout(loaded, deadline)))
            return respond(loaded.name, loaded.version, sig, keys, result.result(), _response_cls())
        finally:
            self._end()

    async def predict(self, request, time_remaining: float | None = None, loaded=None, finish=None):
        """Resolve (unless `loaded` is given), check, admit and run one PredictRequest; while it waits
        for its model it is a Future awaited on the caller's event loop (the REST front end).

        Args:
            time_remaining: seconds before the request's deadline (None: --max-request-seconds).
            loaded: the version already resolved for this request (REST resolves it to read dtypes).
            finish: applied to the PredictResponse on the thread that made it, after the run slot is
                released (REST: the JSON text), saving a hand-off to another thread.
        Returns:
            A tensorflow.serving.PredictResponse, or what `finish` made of it.
        Raises:
            ServingError: see server.py's module docstring.
        """
        loaded, deadline, gate = self._begin(request, time_remaining, loaded)
        finish = finish or (lambda response: response)
        try:
            batcher = loaded.extras.get("batcher")
            if batcher is None:
                gate.admit()

                def job():
                    return finish(gate.run(deadline, self._run, loaded, request, deadline))

                try:
                    future = gate.executor.submit(job)
                except RuntimeError:  # shut down
                    gate.release()
                    raise ServingError("UNAVAILABLE", SHUTTING_DOWN) from None
                future.add_done_callback(gate.release)  # when it ran, or was cancelled before
                return await asyncio.wrap_future(future)
            # A batched version: its bounded batch queues are the admission control.
            loop = asyncio.get_running_loop()
            sig, arrays, keys = await loop.run_in_executor(gate.executor, self._prepare, loaded, request)
            timeout_ms = self._batch_timeout(loaded, deadline)
            result = await asyncio.wrap_future(self._batched(loaded, batcher.submit(sig, arrays, keys, timeout_ms)))
            return await loop.run_in_executor(gate.executor, lambda: finish(execute.respond(
                loaded.name, loaded.version, sig, keys, result, _response_cls())))
        finally:
            self._end()

    def _prepare(self, loaded, request, arrays: dict | None = None):
        return execute.prepare(loaded.model, loaded.name, loaded.version, request, self.options.limits, arrays)

    @staticmethod
    def _batch_timeout(loaded, deadline: float | None) -> int:
        timeout_ms = _timeout_ms(deadline)
        if timeout_ms < 0:
            raise ServingError("DEADLINE_EXCEEDED", f"model {short(loaded.name)}: deadline passed before "
                                                    "the request ran")
        return timeout_ms

    def _batched(self, loaded, future: futures.Future) -> futures.Future:
        """`future` (a batcher task), timed for runtime_latency once it is answered."""
        start = time.perf_counter()

        def done(f: futures.Future) -> None:
            if not f.cancelled() and f.exception() is None:
                self._runtime(loaded.name, time.perf_counter() - start)

        future.add_done_callback(done)
        return future

    def _run(self, loaded, request, deadline: float | None, respond=execute.respond, arrays: dict | None = None):
        """With a run slot: check, decode (unless `arrays` are given), run, encode (`respond`:
        execute.respond or respond_bytes)."""
        timeout_ms = _timeout_ms(deadline)
        if timeout_ms < 0:
            raise ServingError("DEADLINE_EXCEEDED", f"model {short(loaded.name)}: deadline passed while queued")
        sig, arrays, keys = self._prepare(loaded, request, arrays)
        start = time.perf_counter()
        result = sig.run(arrays, keys, timeout_ms)
        if self.observers:
            self._runtime(loaded.name, time.perf_counter() - start)
        return respond(loaded.name, loaded.version, sig, keys, result, _response_cls())

    def _runtime(self, name: str, seconds: float) -> None:
        for observer in self.observers:
            hook = getattr(observer, "observe_runtime", None)
            if hook is not None:
                hook(name, "Predict", seconds)

    def _gate(self, name: str) -> ModelGate:
        gate = self._gates.get(name)
        if gate is None:
            with self._lock:
                gate = self._gates.setdefault(name, ModelGate(name, self.options.max_concurrent,
                                                              self.options.max_queue))
        return gate

    # -- metadata, status, reload -----------------------------------------------------------------
    def metadata(self, model_spec, fields=("signature_def",)):
        """GetModelMetadata: the version's SignatureDefMap.

        Raises:
            ServingError: INVALID_ARGUMENT for no or unknown metadata fields; see `resolve`.
        """
        from tensorflow_serving.apis import get_model_metadata_pb2

        fields = list(fields)
        if not fields:
            raise ServingError("INVALID_ARGUMENT",
                               "GetModelMetadataRequest must specify at least one metadata_field "
                               "(supported: \"signature_def\")")
        for field_name in fields:
            if field_name != "signature_def":
                raise ServingError("INVALID_ARGUMENT", f"Metadata field {truncate(field_name, 80)} is not "
                                                       "supported (supported: \"signature_def\")")
        loaded = self.resolve(model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = loaded.name
        response.model_spec.version.value = loaded.version
        response.metadata["signature_def"].CopyFrom(loaded.signature_def_any)
        return response

    def status(self, model_spec):
        """GetModelStatus: every version known for the model (or the one asked for, by number or label)."""
        from tensorflow_serving.apis import get_model_status_pb2

        from genserve.serving.loader import _TF_CODE_NAMES

        self._check_open()
        version, label = spec_choice(model_spec)
        if label is not None:
            version = self.resolve(model_spec).version
        codes = {name: number for number, name in _TF_CODE_NAMES.items()}
        states = get_model_status_pb2.ModelVersionStatus.State
        response = get_model_status_pb2.GetModelStatusResponse()
        for item in self.registry.status(model_spec.name, version):
            status = response.model_version_status.add()
            status.version = item.version
            status.state = states.Value(item.state)
            status.status.error_code = codes.get(item.error_code, 0)
            status.status.error_message = item.error_message
        return response

    def reload(self, config):
        """HandleReloadConfigRequest: serve exactly the models of a ModelServerConfig (blocking: it
        loads them; the front ends call it on `work`).

        Returns:
            A ReloadConfigResponse (OK) once the listed models are loaded.
        Raises:
            ServingError: INVALID_ARGUMENT for another config kind, a bad entry or a base path outside
                the models directory (the previous config stays in force); UNAVAILABLE when no version
                of a listed model could be loaded.
        """
        from google.protobuf import text_format
        from tensorflow_serving.apis import model_management_pb2

        from genserve.repository import ConfigError, parse_models_config

        self._check_open()
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

    # -- observation and lifecycle ----------------------------------------------------------------
    def observe(self, entrypoint: str, method: str, model: str, code: str, seconds: float) -> None:
        """One answered request (metrics): entrypoint "GRPC" or "REST"."""
        for observer in self.observers:
            observer.observe(entrypoint, method, model, code, seconds)

    def _check_open(self) -> None:
        if self.closing:
            raise ServingError("UNAVAILABLE", SHUTTING_DOWN)

    def close(self) -> None:
        """Refuse every later call with UNAVAILABLE (the start of a drain)."""
        self.closing = True

    def shutdown(self) -> None:
        """End the worker threads (what still runs in a graph finishes on its own)."""
        self.closing = True
        for gate in list(self._gates.values()):
            gate.executor.shutdown(wait=False, cancel_futures=True)
        self.work.shutdown(wait=False, cancel_futures=True)


def _timeout_ms(deadline: float | None) -> int:
    """Milliseconds left before `deadline` for Session.run (0: none; negative: already passed)."""
    if deadline is None:
        return 0
    left = int((deadline - time.monotonic()) * 1000)
    return left if left > 0 else -1


@functools.cache
def _response_cls():
    from tensorflow_serving.apis import predict_pb2

    return predict_pb2.PredictResponse
