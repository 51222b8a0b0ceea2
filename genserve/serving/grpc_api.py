"""The gRPC front end: TF Serving's PredictionService and ModelService over a ModelRegistry.

Implements `tensorflow.serving.PredictionService/Predict` and `/GetModelMetadata`, and
`tensorflow.serving.ModelService/GetModelStatus` and `/HandleReloadConfigRequest` with TF Serving's
generated servicer base classes (the other methods answer UNIMPLEMENTED). Every error is a
`ServingError` mapped to its gRPC status; anything unexpected is INTERNAL, logged in one line with the
traceback at debug level — no request can stop the server.
"""

from __future__ import annotations

import logging
import time

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from genserve.serving import execute
from genserve.serving.errors import ServingError, truncate

log = logging.getLogger("genserve.serving")


def status_code(code: str) -> grpc.StatusCode:
    return grpc.StatusCode[code]


def _answer(method: str, context, empty_response, body, observe=None, model: str = ""):
    """Run one RPC's `body()`; a ServingError becomes its status, any other exception INTERNAL.

    Args:
        observe: `observe(method, code, seconds, model)` called once per request (metrics).
        model: the requested model name (metrics label).
    Returns:
        body's response, else `empty_response()` with the error status set on `context`.
    """
    start = time.perf_counter()
    error = None
    try:
        return body()
    except ServingError as e:
        error = e
    except Exception as e:  # a bug: answer, log one line, keep serving
        log.error("%s failed: %s: %s", method, type(e).__name__, truncate(str(e), 300))
        log.debug("%s traceback", method, exc_info=True)
        error = ServingError("INTERNAL", f"internal error: {type(e).__name__}: {e}")
    finally:
        if observe is not None:
            observe(method, error.code if error else "OK", time.perf_counter() - start, model)
    context.set_code(status_code(error.code))
    context.set_details(error.message)
    return empty_response()


def spec_choice(model_spec) -> tuple[int | None, str | None]:
    """(version, label) of a ModelSpec; (None, None) for the latest."""
    choice = model_spec.WhichOneof("version_choice")
    if choice == "version":
        return model_spec.version.value, None
    if choice == "version_label":
        return None, model_spec.version_label
    return None, None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server):
        self._server = server

    def Predict(self, request, context):
        return _answer("Predict", context, predict_pb2.PredictResponse,
                       lambda: self._predict(request, context), self._server.observe_grpc,
                       request.model_spec.name)

    def _predict(self, request, context):
        remaining = context.time_remaining()  # None without a deadline
        return self._server.predict(request, predict_pb2.PredictResponse, remaining)

    def GetModelMetadata(self, request, context):
        return _answer("GetModelMetadata", context, get_model_metadata_pb2.GetModelMetadataResponse,
                       lambda: self._metadata(request), self._server.observe_grpc, request.model_spec.name)

    def _metadata(self, request):
        fields = list(request.metadata_field)
        if not fields:
            raise ServingError("INVALID_ARGUMENT",
                               "GetModelMetadataRequest must specify at least one metadata_field "
                               "(supported: \"signature_def\")")
        for field_name in fields:
            if field_name != "signature_def":
                raise ServingError("INVALID_ARGUMENT", f"Metadata field {truncate(field_name, 80)} is not "
                                                       "supported (supported: \"signature_def\")")
        version, label = spec_choice(request.model_spec)
        loaded = self._server.registry.resolve(request.model_spec.name, version, label)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = loaded.name
        response.model_spec.version.value = loaded.version
        response.metadata["signature_def"].CopyFrom(loaded.signature_def_any)
        return response


_STATE = {"AVAILABLE": get_model_status_pb2.ModelVersionStatus.AVAILABLE,
          "LOADING": get_model_status_pb2.ModelVersionStatus.LOADING,
          "UNLOADING": get_model_status_pb2.ModelVersionStatus.UNLOADING,
          "END": get_model_status_pb2.ModelVersionStatus.END}


def status_response(statuses) -> get_model_status_pb2.GetModelStatusResponse:
    from genserve.serving.loader import _TF_CODE_NAMES

    codes = {name: number for number, name in _TF_CODE_NAMES.items()}
    response = get_model_status_pb2.GetModelStatusResponse()
    for item in statuses:
        status = response.model_version_status.add()
        status.version = item.version
        status.state = _STATE[item.state]
        status.status.error_code = codes.get(item.error_code, 0)
        status.status.error_message = item.error_message
    return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server):
        self._server = server

    def GetModelStatus(self, request, context):
        return _answer("GetModelStatus", context, get_model_status_pb2.GetModelStatusResponse,
                       lambda: self._status(request), self._server.observe_grpc, request.model_spec.name)

    def _status(self, request):
        version, label = spec_choice(request.model_spec)
        if label is not None:
            version = self._server.registry.resolve(request.model_spec.name, None, label).version
        return status_response(self._server.registry.status(request.model_spec.name, version))

    def HandleReloadConfigRequest(self, request, context):
        return _answer("HandleReloadConfigRequest", context, model_management_pb2.ReloadConfigResponse,
                       lambda: self._server.reload_config(request.config), self._server.observe_grpc)


def add_services(grpc_server, server) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(server),
                                                                        grpc_server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(server), grpc_server)


__all__ = ["add_services", "execute", "status_code"]
