"""Every default of the embedded server, written once: `ModelServer` and `genserve serve` read them here.

    python -c "from genserve.serving.options import ServerOptions; print(ServerOptions())"

`ServerOptions` holds what a `ModelServer` is built with (the library's defaults: any free port, no REST,
batching off as in `tensorflow_model_server`); the `CLI_*` constants are the few places where
`genserve serve` deliberately starts differently (TF Serving's well-known port, batching on as in
Dockerfile.serving). No TensorFlow or gRPC import.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from genserve.repository import DOCKER_PREFIX
from genserve.serving.errors import ServingError

MAX_MESSAGE_BYTES = 2**31 - 1  # gRPC keeps message limits in a C int
MAX_MESSAGE_MB = MAX_MESSAGE_BYTES // (1024 * 1024)  # 2047: the largest whole MiB below 2**31
MIB = 1024 * 1024

READY_PATH = "/v1/health/ready"  # REST readiness (rest_api.py, health.py): genserve's own, not TF Serving's
CLI_PORT = 8500  # tensorflow_model_server's --port
CLI_ENABLE_BATCHING = True  # Dockerfile.serving runs with --enable_batching
MAX_REST_WORKERS = 64
CLI_REST_WORKERS = 0  # REST in the model process unless --rest-workers says otherwise (see docs/serving.md)


@dataclass(frozen=True)
class Limits:
    """Admission limits checked before any graph runs.

    Args:
        max_request_elements: most elements over all inputs of one request (a [5e8, 1] tensor with no
            values is 29 bytes on the wire but 2 GB once decoded).
        max_output_bytes: most bytes of outputs a request may ask for, where the signature fixes the
            output size per batch row (e.g. VAE `decode`: 28*28*4 bytes a row). This also bounds the
            batch size of such signatures: VAE decode of z float32[200000, 2] (1.6 MB on the wire)
            crashes TensorFlow's conv kernels inside the process, taking every model down.
    """

    max_request_elements: int = 1 << 27  # 512 MiB of float32
    max_output_bytes: int = 1 << 28  # 256 MiB

    def max_rows(self, sig) -> int | None:
        """The most batch rows `sig` accepts under the output budget (None: not bounded that way)."""
        per_row = 0
        for spec in sig.outputs.values():
            if spec.shape is None or len(spec.shape) == 0 or any(d is None for d in spec.shape[1:]):
                continue
            if spec.shape[0] is not None:
                continue  # not batched
            per_row += math.prod(spec.shape[1:]) * _itemsize(spec.dtype)
        return None if per_row == 0 else max(1, self.max_output_bytes // per_row)

    def check_elements(self, shapes: dict) -> None:
        total = sum(math.prod(s) for s in shapes.values() if s is not None)
        if total > self.max_request_elements:
            detail = ", ".join(f"'{k}': [{','.join(map(str, s))}]" for k, s in sorted(shapes.items())
                               if s is not None)
            raise ServingError("RESOURCE_EXHAUSTED",
                               f"request has {total:,} input elements ({detail}); this server accepts "
                               f"at most {self.max_request_elements:,} per request "
                               "(--max-request-elements)")


def _itemsize(dtype: int) -> int:
    from genserve.wire.codec import NUMERIC_DTYPES

    numeric = NUMERIC_DTYPES.get(dtype)
    return numeric[0].itemsize if numeric else 8


@dataclass(frozen=True)
class ServerOptions:
    """How a ModelServer listens, polls, admits and drains.

    Args:
        host: interface to bind; 127.0.0.1 by default, "0.0.0.0" opens it up.
        port: gRPC TCP port; 0 picks a free one (see `ModelServer.port` after `start()`).
        rest_port: serve TF Serving's REST API on this port too (0: any free one; None: no REST).
        poll_seconds: how often to look for new versions and models.config changes (<= 0: never).
        config_poll_seconds: how often to re-read models.config (None: at every version poll; 0: once at
            start, TF Serving's --model_config_file_poll_wait_seconds default).
        max_message_bytes: gRPC send/receive limit for both directions, and the REST body limit.
        max_workers: threads shared by the control calls (metadata, status, reload) and the REST
            JSON work; requests waiting for their model never hold one (see service.py).
        max_concurrent_rpcs: gRPC calls open at once (RESOURCE_EXHAUSTED beyond).
        base_path_prefix: the Docker prefix of base_path in models.config, mapped to the models dir.
        allow_external_base_paths: serve base paths outside the models directory (off: refused).
        limits: admission limits (request elements, output bytes).
        max_concurrent: executions running at once per model; `max_queue` more may wait, and one
            beyond that is answered UNAVAILABLE at once.
        max_request_seconds: Session.run timeout for a request without a deadline (0 = none); REST
            requests carry none, as TF Serving's run under --rest_api_timeout_in_ms.
        body_timeout_seconds: a REST request body must arrive within this (408 beyond).
        drain_seconds: on stop, how long requests in flight get (both front ends drain together).
        enable_batching: batch the versions whose folder holds batching_params.pbtxt (TF Serving's
            --enable_batching --enable_per_model_batching_parameters); off by default as in
            tensorflow_model_server, on in `genserve serve` (CLI_ENABLE_BATCHING).
        batch_threads: batch threads per batched version when its file sets no num_batch_threads.
        session_config: a ConfigProto for every Session (None: tf_session.session_config()).
        prometheus_path: serve Prometheus metrics at this path of the REST port (None: none).
        ssl_config: serve over TLS: an SSLConfig message or the path of its text file (TF Serving's
            --ssl_config_file; see tls.py); the REST port then serves HTTPS with the same certificate.
        enable_grpc_healthcheck_service: register grpc.health.v1.Health (TF Serving's
            --enable_grpc_healthcheck_service), SERVING only while every configured model has an
            AVAILABLE version and no drain started (health.py). GET /v1/health/ready on the REST port
            answers the same either way.
        enable_cors_support: add TF Serving's CORS headers to every /v1/ answer of the REST port
            (--rest_api_enable_cors_support; rest_http.CORS_HEADERS).
        rest_workers: serve the REST port from this many worker processes that do its HTTP and JSON
            writing beside the model process (rest_workers.py); 0: in this process.
        idle_trim_seconds: after this long with no Predict begun or in flight, hand the heap's free
            memory back to the OS, once per busy period (memory.IdleTrim, glibc only; <= 0: never).
    """

    host: str = "127.0.0.1"
    port: int = 0
    rest_port: int | None = None
    poll_seconds: float = 2.0
    config_poll_seconds: float | None = None
    max_message_bytes: int = 64 * MIB  # a 1024x1024x3 float32 tensor is 12 MiB
    max_workers: int = 32
    max_concurrent_rpcs: int = 1024
    base_path_prefix: str = DOCKER_PREFIX
    allow_external_base_paths: bool = False
    limits: Limits = Limits()
    max_concurrent: int = 4
    max_queue: int = 16
    max_request_seconds: float = 300.0
    body_timeout_seconds: float = 30.0
    drain_seconds: float = 5.0
    enable_batching: bool = False
    batch_threads: int | None = None
    session_config: object = None
    prometheus_path: str | None = None
    ssl_config: object = None
    enable_grpc_healthcheck_service: bool = False
    enable_cors_support: bool = False
    rest_workers: int = 0
    idle_trim_seconds: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_message_bytes <= MAX_MESSAGE_BYTES:
            raise ValueError(f"max_message_bytes must be between 1 and {MAX_MESSAGE_BYTES}")
        if self.max_concurrent < 1 or self.max_queue < 0:
            raise ValueError("max_concurrent must be >= 1 and max_queue >= 0")
        if self.rest_port is not None and self.rest_port != 0 and self.rest_port == self.port:
            raise ValueError(f"the REST port must differ from the gRPC port ({self.port})")
        if not 0 <= self.rest_workers <= MAX_REST_WORKERS:
            raise ValueError(f"rest_workers must be between 0 and {MAX_REST_WORKERS}")
        if self.rest_workers and self.rest_port is None:
            raise ValueError("REST workers serve the REST port: set rest_port")
        if self.prometheus_path is not None and self.rest_port is None:
            raise ValueError("Prometheus metrics are served on the REST port: set rest_port")

    def replace(self, **changes) -> "ServerOptions":
        return dataclasses.replace(self, **changes)


DEFAULTS = ServerOptions()
