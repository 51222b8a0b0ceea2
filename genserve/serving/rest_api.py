"""The REST API's request logic: TF Serving's RESTful paths and JSON onto service.ModelService.

    genserve serve --models-dir models --port 8500 --rest-port 8501 [--rest-workers 2]
    curl -s localhost:8501/v1/models/toy
    curl -s -d '{"instances": [[1.0], [2.0]]}' localhost:8501/v1/models/toy:predict

Endpoints (tensorflow_serving/g3doc/api_rest.md; model_servers/http_rest_api_handler.cc,
http_rest_api_util.cc, http_server.cc):

    POST /v1/models/{name}[/versions/{N}|/labels/{L}]:predict     row ("instances") or columnar ("inputs")
    POST /v1/models/{name}[/versions/{N}|/labels/{L}]:classify    501 UNIMPLEMENTED (no Example signatures)
    POST /v1/models/{name}[/versions/{N}|/labels/{L}]:regress     501 UNIMPLEMENTED
    GET  /v1/models/{name}[/versions/{N}|/labels/{L}]             GetModelStatusResponse as JSON
    GET  /v1/models/{name}[/versions/{N}|/labels/{L}]/metadata    GetModelMetadataResponse as JSON
    GET  <prometheus path>                                        metrics (with a MonitoringConfig)
    GET  /v1/health/ready   200 {"status": "SERVING"} / 503 (health.py; genserve's own); OPTIONS: CORS

Like TF Serving, every path under /v1/ (case-insensitive) goes to one handler: a method or path it does
not know answers 400 `{"error": "Malformed request: PUT /v1/..."}`, errors answer `{"error": ...}` with
the HTTP status of their canonical code (errors.HTTP_STATUS), and paths outside /v1/ answer 404
(rest_http.py: the HTTP side, bodies, limits). No deadline: --max-request-seconds bounds a run, as TF
Serving's --rest_api_timeout_in_ms does. After SIGTERM every request answers 503.

Two ways in, one logic (`RestApi`, the version resolved once per request):
- in the server process (`LocalBackend.handle`): aiohttp's event loop awaits the model's own threads
  (service.predict); JSON is decoded on the service's worker threads and encoded on the run's thread;
- from REST worker processes (rest_workers.py, `--rest-workers N`): `LocalBackend.handle_blocking` on a
  thread per request, as gRPC calls run; a prediction goes back as PredictResponse bytes and its JSON
  is written by the worker (json_tensor.outputs_json, the same function: the same bytes).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from urllib.parse import unquote

from genserve.serving import json_tensor
from genserve.serving.errors import ServingError, error_json, truncate
from genserve.serving.options import READY_PATH

log = logging.getLogger("genserve.serving")

PREDICTION_PATH = re.compile(  # kPredictionApiGegex
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)")
STATUS_PATH = re.compile(  # kModelStatusApiRegex
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?")
MAX_INT64 = 2**63 - 1
# A predict body up to this size is parsed on the event loop (tens of microseconds), not on a worker
# thread: the two thread hand-offs cost more than the parse (benchmarks/README.md, session 6).
INLINE_PARSE_BYTES = 4096


def _path_parts(match) -> tuple[str, int | None, str | None]:
    """(model name, version, label) of a path match, percent-decoded as TF Serving's DecodeArg does."""
    name, version, label = match.group(1) or "", match.group(2), match.group(3)
    if version is not None:
        number = int(version)
        if number > MAX_INT64:
            raise ServingError("INVALID_ARGUMENT", f"Failed to convert version: {version} to numeric.")
        version = number
    return unquote(name), version, (unquote(label) if label is not None else None)


class RestApi:
    """The request logic, independent of the HTTP library: `await process(method, path, body)` (or
    `process_blocking` on a thread of its own).

    Only translates: JSON <-> protobuf, paths -> ModelSpecs; the work is service.ModelService's.
    """

    def __init__(self, service):
        self._service = service

    async def process(self, method: str, path: str, body: bytes) -> tuple[int, str, str, str, str]:
        """One request under /v1/ (the body already inflated).

        Returns:
            (HTTP status, JSON body, model name, API, canonical code) - the last three label metrics.
        """
        labels = ["", ""]  # model name, API: known once the path is parsed
        try:
            return (200, await self._dispatch(method, path, body, labels), *labels, "OK")
        except Exception as e:
            return self._failure(method, path, labels, e)

    def process_blocking(self, method: str, path: str, body: bytes, raw: bool = False) -> tuple:
        """`process` on the calling thread (which may wait for the model's turn: give it a thread of its
        own). With `raw`, a prediction's output is (format, serialized PredictResponse) instead of its
        JSON, for a REST worker process to write (json_tensor.outputs_json: the same bytes)."""
        labels = ["", ""]
        try:
            return (200, self._dispatch_blocking(method, path, body, labels, raw), *labels, "OK")
        except Exception as e:
            return self._failure(method, path, labels, e)

    @staticmethod
    def _failure(method: str, path: str, labels: list, e: Exception) -> tuple[int, str, str, str, str]:
        if isinstance(e, ServingError):
            return e.http_status, error_json(e.message), *labels, e.code
        # a bug: answer 500, log one line, keep serving
        log.error("REST %s %s failed: %s: %s", method, truncate(path, 200), type(e).__name__,
                  truncate(str(e), 300))
        log.debug("REST traceback", exc_info=e)
        message = truncate(f"internal error: {type(e).__name__}: {e}")
        return 500, error_json(message), *labels, "INTERNAL"

    def _route(self, method: str, path: str, labels: list):
        """("predict" | "status" | "metadata", ModelSpec) of a request; `labels` filled on the way.

        Raises:
            ServingError: INVALID_ARGUMENT (malformed path or version), UNIMPLEMENTED (:classify...).
        """
        if method == "POST":
            match = PREDICTION_PATH.fullmatch(path)
            if match:
                name, version, label = _path_parts(match)
                labels[0], labels[1] = name, match.group(4).lower()
                spec = self._service.spec(name, version, label)
                if labels[1] != "predict":
                    raise ServingError("UNIMPLEMENTED", f"the :{labels[1]} API is not implemented by genserve "
                                                        "(it needs tf.Example signatures); use :predict")
                return "predict", spec
        elif method == "GET":
            match = STATUS_PATH.fullmatch(path)
            if match:
                name, version, label = _path_parts(match)
                labels[0] = name
                if not name:
                    raise ServingError("INVALID_ARGUMENT", "Missing model name in request.")
                return ("metadata" if match.group(4) else "status"), self._service.spec(name, version, label)
        raise ServingError("INVALID_ARGUMENT", f"Malformed request: {method} {truncate(path, 200)}")

    async def _dispatch(self, method: str, path: str, body: bytes, labels: list) -> str:
        kind, spec = self._route(method, path, labels)
        if kind == "predict":
            loaded = self._service.resolve(spec)  # once: the dtypes and the run come from this version
            if len(body) <= INLINE_PARSE_BYTES:
                request, fmt = self._request(loaded, spec, body)
            else:
                request, fmt = await self._blocking(self._request, loaded, spec, body)
            return await self._service.predict(request, None, loaded=loaded,  # JSON made on the run's thread
                                               finish=lambda response: self._outputs(response, fmt))
        return await self._blocking(self._metadata if kind == "metadata" else self._status, spec)

    def _dispatch_blocking(self, method: str, path: str, body: bytes, labels: list, raw: bool):
        kind, spec = self._route(method, path, labels)
        if kind == "predict":
            loaded = self._service.resolve(spec)
            request, fmt = self._request(loaded, spec, body)
            response = self._service.predict_blocking(request, None, loaded=loaded)
            return self._raw_outputs(response, fmt) if raw else self._outputs(response, fmt)
        return (self._metadata if kind == "metadata" else self._status)(spec)

    async def _blocking(self, fn, *args):
        """CPU work (JSON) on the service's worker threads, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._service.work, fn, *args)

    @staticmethod
    def _request(loaded, spec, body: bytes):
        from genserve.wire.codec import fill_tensor_proto
        from tensorflow_serving.apis import predict_pb2

        doc = json_tensor.parse_body(body)
        request = predict_pb2.PredictRequest()
        request.model_spec.CopyFrom(spec)
        request.model_spec.signature_name = json_tensor.signature_name(doc)
        sig = loaded.signature(request.model_spec.signature_name)
        arrays, fmt = json_tensor.request_arrays(doc, {k: s.dtype for k, s in sig.inputs.items()})
        for key, array in arrays.items():
            fill_tensor_proto(request.inputs[key], array)
        return request, fmt

    @staticmethod
    def _outputs(response, fmt: str) -> str:
        from genserve.wire.codec import from_tensor_proto

        outputs = {key: from_tensor_proto(proto) for key, proto in response.outputs.items()}
        return json_tensor.outputs_json(outputs, fmt)

    @staticmethod
    def _raw_outputs(response, fmt: str) -> tuple[str, bytes]:
        """(fmt, the response's bytes), once the outputs are known to make JSON (the errors the
        worker's outputs_json would raise are raised here, so the metrics count them)."""
        from genserve.wire.codec import tensor_layout

        json_tensor.check_outputs({key: tensor_layout(proto) for key, proto in response.outputs.items()}, fmt)
        return fmt, response.SerializeToString()

    def _status(self, spec) -> str:
        from google.protobuf import json_format

        response = self._service.status(spec)
        for item in response.model_version_status:
            item.status.SetInParent()  # TF Serving always sets it ({"error_code": "OK", ...})
        return json_format.MessageToJson(response, always_print_fields_with_no_presence=True, indent=1)

    def _metadata(self, spec) -> str:
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        response = self._service.metadata(spec)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        if not response.metadata["signature_def"].Unpack(sig_map):
            raise ServingError("INTERNAL", "Failed to unpack 'Any' object to 'SignatureDefMap'.")
        options = dict(always_print_fields_with_no_presence=True, preserving_proto_field_name=True,
                       indent=1)
        return ('{\n"model_spec":' + json_format.MessageToJson(response.model_spec, **options) +
                ',\n"metadata": {"signature_def": ' + json_format.MessageToJson(sig_map, **options) + "}\n}\n")




class LocalBackend:
    """rest_http.RestServer's backend in the server process, and what the REST worker processes'
    requests run on there (`handle_blocking`; rest_workers.py).

    Args:
        service: the service.ModelService (its worker threads run the JSON work here).
        health: a health.Health answering GET /v1/health/ready (None: no such endpoint).
        metrics: a metrics.ServingMetrics for the Prometheus page (None: none).
    """

    def __init__(self, service, health=None, metrics=None):
        self.api = RestApi(service)
        self._service = service
        self.health, self.metrics_source = health, metrics
        self.ready_endpoint = health is not None

    def _ready(self, method: str, path: str) -> tuple[int, str] | None:
        if path != READY_PATH or method != "GET" or self.health is None:
            return None
        ready = self.health.ready
        return 200 if ready else 503, f'{{"status": "{"SERVING" if ready else "NOT_SERVING"}"}}'

    def _done(self, answer: tuple, method: str, path: str, remote, start: float):
        status, output, model, api, code = answer
        self._service.observe("REST", api, model, code, time.perf_counter() - start)
        if code == "UNIMPLEMENTED":  # e.g. :classify; one line, as gRPC's Classify
            log.warning("REST: unsupported request %s %s from %s", method, path[:200], remote)
        return status, output

    async def handle(self, method: str, path: str, body: bytes, remote) -> tuple[int, str]:
        """(HTTP status, JSON text) of one request under /v1/, counted in the metrics."""
        start = time.perf_counter()
        return self._ready(method, path) or self._done(await self.api.process(method, path, body),
                                                       method, path, remote, start)

    def handle_blocking(self, method: str, path: str, body: bytes, remote, raw: bool = False) -> tuple:
        """`handle` on the calling thread; with `raw`, a prediction's output as RestApi.process_blocking's."""
        start = time.perf_counter()
        return self._ready(method, path) or self._done(self.api.process_blocking(method, path, body, raw),
                                                       method, path, remote, start)

    def metrics_page(self) -> tuple[bytes, str]:
        from genserve.serving.metrics import CONTENT_TYPE

        return self.metrics_source.exposition(), CONTENT_TYPE

    async def metrics(self) -> tuple[bytes, str]:
        return await asyncio.get_running_loop().run_in_executor(self._service.work, self.metrics_page)

    def observe(self, code: str, seconds: float) -> None:
        """A request refused before it was parsed (body too large, too slow, not inflatable)."""
        self._service.observe("REST", "", "", code, seconds)

    async def inflate(self, raw: bytes, encoding: str, limit: int) -> bytes:
        from genserve.serving.rest_http import inflate

        return await asyncio.get_running_loop().run_in_executor(self._service.work, inflate, raw, encoding, limit)
