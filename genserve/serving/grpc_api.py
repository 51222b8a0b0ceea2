"""The gRPC front end: TF Serving's PredictionService and ModelService, translated onto service.py.

Implements `tensorflow.serving.PredictionService/Predict` and `/GetModelMetadata`, and
`tensorflow.serving.ModelService/GetModelStatus` and `/HandleReloadConfigRequest` (METHODS; any other
method, e.g. Classify, Regress, MultiInference, answers UNIMPLEMENTED, logged in one line: Unsupported).
Every error is a `ServingError` mapped to its gRPC status; anything unexpected is INTERNAL, logged in
one line with the traceback at debug level — no request can stop the server.

Threads: grpcio's synchronous server, with a pool as large as the number of calls it lets open
(ServerOptions.max_concurrent_rpcs): a call waiting for its model's turn (gate.ModelGate) holds a
thread of its own, never one another model needs. Measured on 2 busy cores, toy Predict p50 / 16-client
req/s: this design 1.1 ms / ~560 (the same as the fixed 32-thread pool it replaces, which let a flood
of two models stall every other one); grpc.aio handlers awaiting the model's own executor threads
1.7-1.8 ms / ~330 (the extra event-loop hand-offs cost more than they save).
"""

from __future__ import annotations

import logging
import time

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    predict_pb2,
)

from genserve.serving.errors import ServingError, truncate
from genserve.serving.hot_pool import HotThreadPool
from genserve.wire.predict_bytes import Templates

log = logging.getLogger("genserve.serving")


def _answer(service, method: str, context, empty_response, body, request, *extra):
    """Run one RPC's `body(request, context, *extra)`; a ServingError becomes its status, any other
    exception INTERNAL.

    Returns:
        body's response, else `empty_response()` with the error status set on `context`.
    """
    start = time.perf_counter()
    error = None
    try:
        return body(request, context, *extra)
    except ServingError as e:
        error = e
    except Exception as e:  # a bug: answer, log one line, keep serving
        log.error("%s failed: %s: %s", method, type(e).__name__, truncate(str(e), 300))
        log.debug("%s traceback", method, exc_info=True)
        error = ServingError("INTERNAL", f"internal error: {type(e).__name__}: {e}")
    finally:
        if service.observers:
            model = request.model_spec.name if request is not None and hasattr(request, "model_spec") else ""
            service.observe("GRPC", method, model, error.code if error else "OK", time.perf_counter() - start)
    context.set_code(grpc.StatusCode[error.code])
    context.set_details(error.message)
    return empty_response()


class Handlers:
    """The RPC bodies: each takes the decoded request and returns the response (or raises)."""

    def __init__(self, service):
        self._service = service

    def Predict(self, request, context, arrays=None):  # answers bytes (time_remaining None: no deadline)
        return self._service.predict_blocking(request, context.time_remaining(), serialized=True, arrays=arrays)

    def GetModelMetadata(self, request, context):
        return self._service.metadata(request.model_spec, request.metadata_field)

    def GetModelStatus(self, request, context):
        return self._service.status(request.model_spec)

    def HandleReloadConfigRequest(self, request, context):
        return self._service.reload(request.config)


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


def _method_handler(service, name: str, request_cls, response_cls, body, requests=None):
    """A unary handler that decodes the request itself: an undecodable one is INTERNAL, logged
    in one line (grpcio would log a traceback per request). `requests`: a predict_bytes.Templates of
    this method's requests (Predict): a request laid out as one answered before, with other numbers, is
    read without protobuf (the learned request stands in for its model_spec, input headers and
    output_filter; the new values come decoded beside it)."""
    from google.protobuf.message import DecodeError

    def unparsable(_request, _context):
        # grpc++ (TF Serving's server) answers INTERNAL for a request it cannot parse
        raise ServingError("INTERNAL", f"Failed to parse the request as a {request_cls.__name__}")

    def handle(raw: bytes, context):
        if requests is not None:
            known = requests.read(raw)
            if known is not None:
                return _answer(service, name, context, response_cls, body, *known)
        try:
            request = request_cls.FromString(raw)
        except DecodeError as e:
            log.warning("%s: undecodable request of %d bytes (%s)", name, len(raw), truncate(str(e), 200))
            return _answer(service, name, context, response_cls, unparsable, None)
        response = _answer(service, name, context, response_cls, body, request)
        if requests is not None and response.__class__ is bytes:  # answered: a layout worth knowing
            try:
                requests.learn(raw, request)
            except Exception as e:  # a bug in learning must not cost the answer
                log.error("%s: learning a request layout failed: %s: %s", name, type(e).__name__,
                          truncate(str(e), 300))
        return response

    def serialize(response) -> bytes:  # a message, or the bytes Predict writes itself
        return response if response.__class__ is bytes else response.SerializeToString()

    return grpc.unary_unary_rpc_method_handler(handle, request_deserializer=None, response_serializer=serialize)


EXAMPLE_METHODS = ("Classify", "Regress", "MultiInference")  # TF Serving's tf.Example APIs


class Unsupported(grpc.GenericRpcHandler):
    """Every method no other handler serves (registered last): UNIMPLEMENTED, logged in one line with
    the caller. Classify, Regress and MultiInference need tf.Example signatures, which genserve's models
    do not have; grpcio alone would answer "Method not found!" and log nothing."""

    def __init__(self, service):
        self._service = service

    def service(self, handler_call_details):
        method = handler_call_details.method
        service_name, _, name = method.lstrip("/").rpartition("/")
        if service_name == "tensorflow.serving.PredictionService" and name in EXAMPLE_METHODS:
            message = f"{name} is not implemented by genserve (it needs tf.Example signatures); use Predict"
        else:
            message = f"Method not found: {truncate(method, 200)}"

        def handle(_raw: bytes, context):
            log.warning("gRPC: unsupported method %s from %s (UNIMPLEMENTED)", truncate(method, 200), context.peer())
            if self._service.observers:
                self._service.observe("GRPC", name, "", "UNIMPLEMENTED", 0.0)
            context.abort(grpc.StatusCode.UNIMPLEMENTED, message)  # no message sent: also right for streams

        return grpc.unary_unary_rpc_method_handler(handle)


def generic_handlers(service, predict_requests: Templates | None = None) -> list:
    """The gRPC handlers of both TF Serving services over `service` (`predict_requests`: the layouts
    of Predict requests to learn and recognise; None: every request is parsed)."""
    handlers = Handlers(service)
    return [grpc.method_handlers_generic_handler(
        service_name, {method: _method_handler(service, method, req, resp, getattr(handlers, method),
                                               predict_requests if method == "Predict" else None)
                       for method, (req, resp) in methods.items()})
        for service_name, methods in METHODS.items()]


class GrpcServer:
    """grpcio's server over `service`, with one handler thread per call made on demand (see the
    module docstring for why).

    Args:
        service: the service.ModelService.
        address: "HOST:PORT" to bind (port 0: any free one).
        options: the server's ServerOptions (message limits, concurrent RPCs).
        credentials: grpc.ServerCredentials for TLS (None: plaintext).
        health: a genserve.serving.health.Health registered beside the two services (None: none).
    """

    def __init__(self, service, address: str, options, credentials=None, health=None):
        self._service = service
        self.health = health  # a health.Health to register (--enable-grpc-healthcheck-service), or None
        self.address = address
        self.options = options
        self.credentials = credentials
        self.predict_requests = Templates(2, "inputs")  # PredictRequest.inputs is field 2
        self._server = None

    def start(self) -> int:
        """Bind and serve. Returns the bound port.

        Raises:
            OSError: the address cannot be bound.
        """
        options = [
            ("grpc.max_send_message_length", self.options.max_message_bytes),
            ("grpc.max_receive_message_length", self.options.max_message_bytes),
            ("grpc.so_reuseport", 0),  # fail loudly instead of sharing a port with another server
        ]
        cap = self.options.max_concurrent_rpcs
        # As many threads as calls may be open: idle threads are reused (the one idle last first:
        # hot_pool.py), new ones made on demand, so a call never waits for a thread that another model's
        # waiting calls hold.
        self._pool = HotThreadPool(cap, thread_name_prefix="genserve-rpc")
        server = grpc.server(self._pool, options=options, maximum_concurrent_rpcs=cap)
        server.add_generic_rpc_handlers(generic_handlers(self._service, self.predict_requests))
        if self.health is not None:
            self.health.add_to_server(server)
        server.add_generic_rpc_handlers([Unsupported(self._service)])  # last: what no handler serves
        try:
            if self.credentials is not None:
                port = server.add_secure_port(self.address, self.credentials)
            else:
                port = server.add_insecure_port(self.address)
        except RuntimeError as e:
            raise OSError(f"cannot listen on {self.address} ({e})") from None
        if port == 0:
            raise OSError(f"cannot listen on {self.address}")
        server.start()
        self._server = server
        return port

    def stop(self, grace: float | None) -> None:
        """New calls are refused at once; calls in flight get `grace` seconds, then are cancelled."""
        if self._server is not None:
            self._server.stop(grace).wait()
            self._pool.shutdown(wait=False)  # idle threads end; a handler still running finishes

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stopped (or `timeout`); True when stopped."""
        return self._server is None or self._server.wait_for_termination(timeout)
