"""The REST front end: TF Serving's RESTful API (and the Prometheus page) beside the gRPC server.

    genserve serve --models-dir models --port 8500 --rest-port 8501
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
the HTTP status of their canonical code (errors.HTTP_STATUS), and paths outside /v1/ answer 404.
aiohttp on its own event loop in a thread only translates: JSON is decoded and encoded on the service's
worker threads, the model's work done in service.ModelService (the version resolved once per request).
Request bodies are bounded by --max-message-mb (413 beyond, also for a declared Content-Length or a
gzip/deflate body inflating past it, inflated chunk by chunk off the event loop); a body that does not
inflate or is not UTF-8 JSON answers 400, one not all there within 30 s (body_timeout_seconds) 408. Bad
HTTP and unsupported requests (:classify) log one line. No deadline: --max-request-seconds bounds a run,
as TF Serving's --rest_api_timeout_in_ms does. After SIGTERM every request answers 503.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from concurrent import futures
from urllib.parse import unquote

from genserve.serving import json_tensor
from genserve.serving.errors import OneLineLog, ServingError, error_json, truncate
from genserve.serving.options import READY_PATH

log = logging.getLogger("genserve.serving")

V1_PATH = re.compile(r"(?i)/v1/.*")  # kHTTPRestApiHandlerPathRegex
PREDICTION_PATH = re.compile(  # kPredictionApiGegex
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)")
STATUS_PATH = re.compile(  # kModelStatusApiRegex
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?")
MAX_INT64 = 2**63 - 1
# On every /v1/ answer with --rest-api-enable-cors-support (TF Serving's http_rest_api_util.cc AddCORSHeaders).
CORS_HEADERS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "POST, GET",
                "Access-Control-Allow-Headers": "Content-Type"}


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
    """The request logic, independent of the HTTP library: `await process(method, path, body)`.

    Only translates: JSON <-> protobuf, paths -> ModelSpecs; the work is service.ModelService's.
    """

    def __init__(self, service):
        self._service = service

    async def process(self, method: str, path: str, body: bytes) -> tuple[int, str, str, str, str]:
        """One request under /v1/ (the body already inflated).

        Returns:
            (HTTP status, JSON body, model name, API, canonical code) - the last three label metrics.
        """
        name, api = "", ""
        try:
            output = None
            if method == "POST":
                match = PREDICTION_PATH.fullmatch(path)
                if match:
                    name, version, label = _path_parts(match)
                    api = match.group(4).lower()
                    output = await self._post(api, self._service.spec(name, version, label), body)
            elif method == "GET":
                match = STATUS_PATH.fullmatch(path)
                if match:
                    name, version, label = _path_parts(match)
                    if not name:
                        raise ServingError("INVALID_ARGUMENT", "Missing model name in request.")
                    spec = self._service.spec(name, version, label)
                    output = await self._blocking(self._metadata if match.group(4) else self._status, spec)
            if output is None:
                raise ServingError("INVALID_ARGUMENT", f"Malformed request: {method} {truncate(path, 200)}")
            return 200, output, name, api, "OK"
        except ServingError as e:
            return e.http_status, error_json(e.message), name, api, e.code
        except Exception as e:  # a bug: answer 500, log one line, keep serving
            log.error("REST %s %s failed: %s: %s", method, truncate(path, 200), type(e).__name__,
                      truncate(str(e), 300))
            log.debug("REST traceback", exc_info=True)
            message = truncate(f"internal error: {type(e).__name__}: {e}")
            return 500, error_json(message), name, api, "INTERNAL"

    async def _blocking(self, fn, *args):
        """CPU work (JSON) on the service's worker threads, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._service.work, fn, *args)

    async def _post(self, api: str, spec, body: bytes) -> str:
        if api != "predict":
            raise ServingError("UNIMPLEMENTED", f"the :{api} API is not implemented by genserve (it needs "
                                                "tf.Example signatures); use :predict")
        loaded = self._service.resolve(spec)  # once: the dtypes and the run come from this version
        request, fmt = await self._blocking(self._request, loaded, spec, body)
        return await self._service.predict(request, None, loaded=loaded,  # JSON made on the run's thread
                                           finish=lambda response: self._outputs(response, fmt))

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


class BodyTooLarge(Exception):
    """A request body (as sent, or once inflated) beyond the server's limit: 413."""


def inflate(raw: bytes, encoding: str, limit: int) -> bytes:
    """The body of a request with `Content-Encoding: gzip` or `deflate`, inflated at most `limit` bytes
    at a time, so a small bomb never grows past the limit (called on a worker thread; zlib releases
    the GIL while it inflates).

    Raises:
        BodyTooLarge: the inflated body exceeds `limit`.
        ServingError: INVALID_ARGUMENT for data that does not inflate.
    """
    import zlib

    # wbits: 16+15 reads a gzip member, 15 a zlib stream; -15 a raw deflate stream (what some
    # clients send as "deflate").
    wbits = 31 if encoding in ("gzip", "x-gzip") else (15 if raw[:1] == b"\x78" else -15)
    inflater = zlib.decompressobj(wbits)
    out, size, data = [], 0, raw
    try:
        while data:
            chunk = inflater.decompress(data, limit + 1 - size)
            size += len(chunk)
            out.append(chunk)
            if size > limit:
                raise BodyTooLarge()
            data = inflater.unconsumed_tail
        out.append(inflater.flush())
    except zlib.error as e:
        raise ServingError("INVALID_ARGUMENT", f"Failed to decompress the request body "
                                               f"(Content-Encoding: {encoding}): {e}") from None
    if not inflater.eof:
        raise ServingError("INVALID_ARGUMENT", f"Failed to decompress the request body "
                                               f"(Content-Encoding: {encoding}): truncated data")
    if size + len(out[-1]) > limit:
        raise BodyTooLarge()
    return b"".join(out)


class RestServer:
    """aiohttp on its own event loop and thread, serving RestApi and (optionally) the metrics page.

    Args:
        service: the service.ModelService (its worker threads run the JSON work).
        host, port: where to listen; port 0 picks a free one (see `.port` after start()).
        max_body_bytes: the largest request body accepted, as sent and once inflated (413 beyond).
        metrics: a metrics.ServingMetrics to expose at `metrics_path` (None: no metrics page).
        body_timeout: seconds a request body may take to arrive (408 beyond, and the connection closes).
    """

    def __init__(self, service, host: str, port: int, max_body_bytes: int, metrics=None,
                 metrics_path: str | None = None, ssl_context=None, body_timeout: float = 30.0,
                 health=None, cors: bool = False):
        self._api = RestApi(service)
        self.health, self.cors = health, cors  # readiness (a health.Health, None: no endpoint); CORS headers
        self._service = service
        self.host, self.port = host, port
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout  # seconds for a whole request body to arrive (408 beyond)
        self.ssl_context = ssl_context  # HTTPS when set (tls.server_ssl_context)
        self.metrics = metrics
        self.metrics_path = metrics_path if metrics is not None else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner = None
        self._inflight = 0  # requests being handled (touched on the loop thread only)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> int:
        """Bind and serve in a background thread. Returns the bound port.

        Raises:
            OSError: the address cannot be bound.
        """
        ready: futures.Future = futures.Future()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="genserve-rest-loop",
                                        daemon=True)
        self._thread.start()
        try:
            self.port = ready.result(timeout=60)
        except OSError as e:
            self._thread.join(timeout=10)
            raise OSError(f"cannot listen on {self.host}:{self.port} for REST ({e.strerror or e})") from None
        return self.port

    def _run(self, ready: futures.Future) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            port = loop.run_until_complete(self._setup())
        except BaseException as e:
            ready.set_exception(e)
            loop.run_until_complete(self._cleanup())
            loop.close()
            return
        ready.set_result(port)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._cleanup())
            pending = asyncio.all_tasks(loop)  # handlers of connections dropped mid-request
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _setup(self) -> int:
        from aiohttp import web

        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # shutdown_timeout: what is left in flight after stop()'s own grace wait is cancelled at once.
        # auto_decompress off: bodies are inflated by `inflate`, bounded, on a worker thread.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1,
                                     auto_decompress=False, logger=OneLineLog(log))  # bad HTTP: one line
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_port=False, ssl_context=self.ssl_context)
        await site.start()
        return self._runner.addresses[0][1]

    async def _cleanup(self, grace: float = 0.0) -> None:
        if self._runner is None:
            return
        for site in list(self._runner.sites):
            await site.stop()  # no new connections
        deadline = time.monotonic() + grace
        while self._inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self._runner.cleanup()  # closes keep-alive connections, cancels what is left
        self._runner = None

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop accepting, give requests in flight `grace` seconds, then close."""
        grace = 0.0 if grace is None else grace
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._cleanup(grace), loop).result(timeout=grace + 10)
            except (futures.TimeoutError, RuntimeError) as e:
                log.warning("REST shutdown: %s", e)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
        self._thread = None

    # -- requests ---------------------------------------------------------------------------------
    async def _handle(self, request):
        from aiohttp import web

        path = request.rel_url.raw_path
        if self.metrics_path is not None and request.path == self.metrics_path:
            from genserve.serving.metrics import CONTENT_TYPE

            page = await asyncio.get_running_loop().run_in_executor(self._service.work, self.metrics.exposition)
            return web.Response(body=page, headers={"Content-Type": CONTENT_TYPE})
        if not V1_PATH.fullmatch(path):
            return web.Response(status=404, text=f"404: Not Found: {truncate(path, 200)}")
        self._inflight += 1
        try:
            response = await self._handle_v1(request, path)
        finally:
            self._inflight -= 1
        if self.cors:
            response.headers.update(CORS_HEADERS)
        return response

    async def _handle_v1(self, request, path: str):
        from aiohttp import web

        start = time.perf_counter()
        if request.method == "OPTIONS":  # CORS preflight, as TF Serving answers it
            if re.search(r"https?://", request.headers.get("Origin", "")):
                return web.Response(status=200, content_type="application/json")
            error = ServingError("FAILED_PRECONDITION", "Origin header is missing in CORS preflight")
            return self._json(error.http_status, error_json(error.message))
        if path == READY_PATH and request.method == "GET" and self.health is not None:
            ready = self.health.ready
            return self._json(200 if ready else 503, f'{{"status": "{"SERVING" if ready else "NOT_SERVING"}"}}')
        try:
            body = await self._body(request)
        except BodyTooLarge:
            message = (f"request body is larger than this server's limit of {self.max_body_bytes:,} bytes "
                       "(--max-message-mb)")
            self._service.observe("REST", "", "", "RESOURCE_EXHAUSTED", time.perf_counter() - start)
            return self._json(413, error_json(message), close=True)
        except asyncio.TimeoutError:
            message = f"the request body did not arrive within {self.body_timeout:g} s"
            self._service.observe("REST", "", "", "DEADLINE_EXCEEDED", time.perf_counter() - start)
            return self._json(408, error_json(message), close=True)
        except ServingError as e:
            self._service.observe("REST", "", "", e.code, time.perf_counter() - start)
            return self._json(e.http_status, error_json(e.message))
        status, text, model, api, code = await self._api.process(request.method, path, body)
        self._service.observe("REST", api, model, code, time.perf_counter() - start)
        if code == "UNIMPLEMENTED":  # e.g. :classify; one line, as gRPC's Classify
            log.warning("REST: unsupported request %s %s from %s", request.method, path[:200], request.remote)
        return self._json(status, text)

    async def _body(self, request) -> bytes:
        """The request body, inflated. A declared length beyond the limit is refused before reading.

        Raises:
            BodyTooLarge, asyncio.TimeoutError (not all of it within body_timeout), ServingError
            (INVALID_ARGUMENT: an unknown Content-Encoding or data that does not inflate).
        """
        from aiohttp import web

        if request.content_length is not None and request.content_length > self.max_body_bytes:
            raise BodyTooLarge()
        try:
            raw = await asyncio.wait_for(request.read(), self.body_timeout)
        except web.HTTPRequestEntityTooLarge:
            raise BodyTooLarge() from None
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            return raw
        if encoding not in ("gzip", "x-gzip", "deflate"):
            raise ServingError("INVALID_ARGUMENT", f"unsupported Content-Encoding: {truncate(encoding, 40)} "
                                                   "(gzip, deflate or none)")
        return await asyncio.get_running_loop().run_in_executor(
            self._service.work, inflate, raw, encoding, self.max_body_bytes)

    @staticmethod
    def _json(status: int, text: str, close: bool = False):
        from aiohttp import web

        response = web.Response(status=status, text=text, content_type="application/json")
        if close:  # the rest of the body is not read: this connection cannot carry another request
            response.force_close()
        return response

