"""The gRPC front end: TF Serving's PredictionService and ModelService, translated onto service.py.

Implements `tensorflow.serving.PredictionService/Predict` and `/GetModelMetadata`, and
`tensorflow.serving.ModelService/GetModelStatus` and `/HandleReloadConfigRequest` (METHODS; the other
methods of both services answer UNIMPLEMENTED). The handlers are coroutines
on a grpc.aio server (its own event loop thread): a Predict waiting for its model awaits a Future and
holds no thread (see service.py). Every error is a `ServingError` mapped to its gRPC status; anything
unexpected is INTERNAL, logged in one line with the traceback at debug level — no request can stop the
server.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent import futures

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    predict_pb2,
)

from genserve.serving.errors import ServingError, truncate

log = logging.getLogger("genserve.serving")


async def _answer(service, method: str, context, empty_response, body, model: str = ""):
    """Await one RPC's `body()`; a ServingError becomes its status, any other exception INTERNAL.

    Returns:
        body's response, else `empty_response()` with the error status set on `context`.
    """
    start = time.perf_counter()
    error = None
    try:
        return await body()
    except ServingError as e:
        error = e
    except asyncio.CancelledError:  # the client went away or the drain ended
        error = ServingError("CANCELLED", "the request was cancelled")
        raise
    except Exception as e:  # a bug: answer, log one line, keep serving
        log.error("%s failed: %s: %s", method, type(e).__name__, truncate(str(e), 300))
        log.debug("%s traceback", method, exc_info=True)
        error = ServingError("INTERNAL", f"internal error: {type(e).__name__}: {e}")
    finally:
        if service.observers:
            service.observe("GRPC", method, model, error.code if error else "OK", time.perf_counter() - start)
    context.set_code(grpc.StatusCode[error.code])
    context.set_details(error.message)
    return empty_response()


class Handlers:
    """The RPC bodies: each takes the decoded request and returns the response (or raises)."""

    def __init__(self, service):
        self._service = service

    async def Predict(self, request, context):
        return await self._service.predict(request, context.time_remaining())  # None: no deadline

    async def GetModelMetadata(self, request, context):
        return self._service.metadata(request.model_spec, request.metadata_field)

    async def GetModelStatus(self, request, context):
        return self._service.status(request.model_spec)

    async def HandleReloadConfigRequest(self, request, context):  # loading blocks: off the event loop
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._service.work, self._service.reload, request.config)


# service -> method -> (request class, response class); methods not listed answer UNIMPLEMENTED.
METHODS = {
    "tensorflow.serving.PredictionService": {
        "Predict": (predict_pb2.PredictRequest, predict_pb2.PredictResponse),
        "GetModelMetadata": (get_model_metadata_pb2.GetModelMetadataRequest,
                             get_model_metadata_pb2.GetModelMetadataResponse),
    },
    "tensorflow.serving.ModelService": {
        "GetModelStatus": (get_model_status_pb2.GetModelStatusRequest,
                           get_model_status_pb2.GetModelStatusResponse),
        "HandleReloadConfigRequest": (model_management_pb2.ReloadConfigRequest,
                                      model_management_pb2.ReloadConfigResponse),
    },
}


def _method_handler(service, name: str, request_cls, response_cls, body):
    """A unary handler that decodes the request itself: an undecodable one is INVALID_ARGUMENT, logged
    in one line (grpc.aio would answer UNKNOWN and log a traceback per request)."""
    from google.protobuf.message import DecodeError

    async def handle(raw: bytes, context):
        try:
            request = request_cls.FromString(raw)
        except DecodeError as e:
            log.warning("%s: undecodable request of %d bytes (%s)", name, len(raw), truncate(str(e), 200))
            request = None

        async def run():
            if request is None:
                raise ServingError("INVALID_ARGUMENT", f"cannot parse the request as a {request_cls.__name__}")
            return await body(request, context)

        model = request.model_spec.name if request is not None and hasattr(request, "model_spec") else ""
        return await _answer(service, name, context, response_cls, run, model)

    return grpc.unary_unary_rpc_method_handler(handle, request_deserializer=None,
                                               response_serializer=response_cls.SerializeToString)


def generic_handlers(service) -> list:
    """The gRPC handlers of both TF Serving services over `service`."""
    handlers = Handlers(service)
    return [grpc.method_handlers_generic_handler(
        service_name, {method: _method_handler(service, method, req, resp, getattr(handlers, method))
                       for method, (req, resp) in methods.items()})
        for service_name, methods in METHODS.items()]


class GrpcServer:
    """A grpc.aio server on its own event loop thread, serving `service`.

    Args:
        service: the service.ModelService.
        address: "HOST:PORT" to bind (port 0: any free one).
        options: the server's ServerOptions (message limits, concurrent RPCs).
        credentials: grpc.ServerCredentials for TLS (None: plaintext).
    """

    def __init__(self, service, address: str, options, credentials=None):
        self._service = service
        self.address = address
        self.options = options
        self.credentials = credentials
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="genserve-grpc-loop", daemon=True)
        self._server = None
        self._stopped = threading.Event()

    def start(self) -> int:
        """Bind and serve. Returns the bound port.

        Raises:
            OSError: the address cannot be bound.
        """
        self._thread.start()
        try:
            return self._call(self._start(), 60)
        except BaseException:
            self._end_loop()
            raise

    def _call(self, coro, timeout: float | None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> int:
        options = [
            ("grpc.max_send_message_length", self.options.max_message_bytes),
            ("grpc.max_receive_message_length", self.options.max_message_bytes),
            ("grpc.so_reuseport", 0),  # fail loudly instead of sharing a port with another server
        ]
        server = grpc.aio.server(options=options, maximum_concurrent_rpcs=self.options.max_concurrent_rpcs)
        server.add_generic_rpc_handlers(generic_handlers(self._service))
        try:
            if self.credentials is not None:
                port = server.add_secure_port(self.address, self.credentials)
            else:
                port = server.add_insecure_port(self.address)
        except RuntimeError as e:
            raise OSError(f"cannot listen on {self.address} ({e})") from None
        if port == 0:
            raise OSError(f"cannot listen on {self.address}")
        await server.start()
        self._server = server
        return port

    def stop(self, grace: float | None) -> None:
        """New calls are refused at once; calls in flight get `grace` seconds, then are cancelled."""
        if self._server is not None and self._thread.is_alive():
            try:
                self._call(self._server.stop(grace), (grace or 0) + 10)
            except (futures.TimeoutError, RuntimeError) as e:
                log.warning("gRPC shutdown: %s", e)
        self._server = None
        self._end_loop()

    def _end_loop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stopped (or `timeout`); True when stopped."""
        return self._stopped.wait(timeout)
