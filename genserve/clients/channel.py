"""The channel of the thin gRPC client: Predict, GetModelMetadata and GetModelStatus against TF Serving or genserve.

No TensorFlow here: requests are genserve's own wire-compatible messages (genserve/wire/protos),
sent by TF Serving's method paths, so the same client talks to `tensorflow_model_server` and to
`genserve serve`. Every call has a deadline; UNAVAILABLE (server not up yet, connection refused or
reset) is retried with exponential backoff inside that deadline; every other failure surfaces at once
as `GenserveError` carrying the gRPC code and details (UNAVAILABLE that waiting cannot fix, such as a
DNS failure or a TLS mismatch, is not retried: genserve.clients.failures). TLS is passed to each Client (TlsSettings);
pinning one model version for a job is genserve.clients.pinned.

    python -c "from genserve.clients import Client; c = Client('127.0.0.1:8500', timeout=2); print(c.status('vae'))"
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, NamedTuple

import grpc
import numpy as np

from genserve.clients.failures import RetryPolicy, diagnose, waiting_reason
from genserve.clients.messages import (METADATA_METHOD, PREDICT_METHOD, STATUS_METHOD, GenserveError,
                                       Inputs, SignatureInfo, VersionStatus, model_spec, predict_request,
                                       predict_request_bytes, signatures_from_metadata)
from genserve.clients.replicas import ChannelTarget, channel_target
from genserve.clients.tls import TlsSettings, channel_credentials, tls_settings
from genserve.wire.predict_bytes import Templates
from genserve.wire.protos import serving_pb2

if TYPE_CHECKING:  # pragma: no cover
    from genserve.clients.pinned import PinnedModel

__all__ = ["Client", "DEFAULT_MAX_MESSAGE_BYTES", "GenserveError", "Outputs", "RetryPolicy", "SignatureInfo",
           "TlsSettings", "VersionStatus", "channel_credentials", "predict_request", "signatures_from_metadata",
           "tls_settings"]

# Large enough for a 1024x1024x3 float32 image (12 MiB raw) even when a server answers in the *_val
# fields, where a negative int32 costs up to 10 bytes (a 3 MB uint8 reply becomes ~6 MB).
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

Outputs = dict[str, np.ndarray]


class Reply(NamedTuple):
    """A decoded PredictResponse: which version answered and the outputs."""

    model_spec: Any  # the reply's ModelSpec (shared by the replies of one layout: read it, do not change it)
    outputs: Outputs  # output key -> new, writable numpy array


def _parse_response(raw: bytes):
    """A PredictResponse from its bytes; undecodable bytes are GenserveError INTERNAL (what grpcio says
    when its own deserializer fails)."""
    from google.protobuf.message import DecodeError

    try:
        return serving_pb2.PredictResponse.FromString(raw)
    except DecodeError as e:
        raise GenserveError(grpc.StatusCode.INTERNAL,
                            f"cannot parse the server's reply as a PredictResponse ({len(raw)} bytes: {e})") from None


def client_channel_options(target_options: Iterable[tuple[str, Any]], max_message_bytes: int,
                           user_options: Iterable[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """The channel arguments of a Client: the user's `options`, then the target's
    (replicas.channel_target) and genserve's for every key the user did not set. Each key appears once:
    gRPC core takes the FIRST value of a repeated key, so a user's option listed after a default of the
    same key would be ignored."""
    user_options = list(user_options)
    user_keys = {key for key, _ in user_options}
    if "grpc.ssl_target_name_override" in user_keys:
        user_keys.add("grpc.default_authority")
    defaults = [
        *target_options,
        ("grpc.max_send_message_length", int(max_message_bytes)),
        ("grpc.max_receive_message_length", int(max_message_bytes)),
        # Reconnect quickly after a refused connection, so a retry can reach a server that has
        # just come up (gRPC's default first reconnect backoff is 1 s).
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        # No retry layer in gRPC core: Client._call retries UNAVAILABLE itself (RetryPolicy), and no
        # service config genserve sets has a retryPolicy. The layer (gRFC A6: it also buffers each
        # request for a possible retry) cost 7-20 us per text step call on loopback, measured against
        # a channel without it (benchmarks/README.md, session 10).
        ("grpc.enable_retries", 0),
    ]
    return [*user_options, *(item for item in defaults if item[0] not in user_keys)]


class Client:
    """A connection to a TF-Serving-compatible gRPC server.

    Use as a context manager (or call close()); one Client is safe to share between threads.

        with Client("127.0.0.1:8500") as client:
            out = client.predict("vae", {"z": z}, signature="decode")   # {"images": (B, 28, 28, 1)}

    Args:
        target: "host:port" of the server; or several replicas, "host:port,host:port", or
            "dns:///name:port" (every address of the name): then each call goes to the next
            healthy replica (gRPC round_robin with client-side health checking of
            tensorflow.serving.PredictionService) and a retried UNAVAILABLE call to another one
            (genserve.clients.replicas).
        timeout: default deadline in seconds for each call, retries included.
        max_message_bytes: send and receive limit set on the channel (gRPC's default is 4 MiB).
        retry: backoff for UNAVAILABLE, until each call's deadline; RetryPolicy.disabled() (one
            attempt) turns retries off.
        options: extra gRPC channel options; one of a key genserve also sets replaces genserve's
            (e.g. ("grpc.ssl_target_name_override", "localhost") when the certificate names another
            host, or ("grpc.enable_retries", 1) for gRPC's own retries as a service config asks).
        tls: connect over TLS (grpc.secure_channel): a TlsSettings, or True with the three below.
            None: TLS exactly when any of the three below is given. There is no process-wide
            default: the CLI passes its --tls options to each Client it builds.
        root_certificates: PEM bytes, or the path of a PEM file, of the CA that signed the server's
            certificate (None with TLS: the system's roots).
        client_cert, client_key: PEM bytes or paths of this client's certificate and key, for a server
            that verifies clients (SSLConfig client_verify). Both or neither.
        on_wait: called once with a line ("waiting for HOST:PORT ...") when retries have gone on for
            a second (the CLI prints it on stderr); None: silent.

    Only what time can fix is retried: a refused connection or a server answering UNAVAILABLE. A
    DNS failure, an HTTP/1.x (REST) port or a TLS/plaintext mismatch fails at once with the cause and
    the fix (genserve.clients.failures).
    """

    def __init__(self, target: str, timeout: float = 30.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 retry: RetryPolicy = RetryPolicy(),
                 options: Iterable[tuple[str, Any]] = (), tls: "bool | TlsSettings | None" = None,
                 root_certificates: bytes | str | None = None, client_cert: bytes | str | None = None,
                 client_key: bytes | str | None = None, on_wait: Callable[[str], None] | None = None):
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.target = target
        self.timeout = float(timeout)
        self.retry = retry
        self.on_wait = on_wait
        self._rng = random.Random()
        self._unusable: GenserveError | None = None  # raised by every call: what waiting cannot fix
        try:
            resolved = channel_target(target)
        except GenserveError as e:  # a replica's host name does not resolve: say so at the first call, as
            self._unusable = e      # gRPC's own DNS failure would be
            resolved = ChannelTarget(target, (target,))
        self.replicated = resolved.replicated  # round_robin over replicas (genserve.clients.replicas)
        channel_options = client_channel_options(resolved.options, max_message_bytes, options)
        credentials = channel_credentials(tls, root_certificates, client_cert, client_key)
        self.tls = credentials is not None
        if credentials is None:
            self._channel = grpc.insecure_channel(resolved.uri, options=channel_options)
        else:
            self._channel = grpc.secure_channel(resolved.uri, credentials, options=channel_options)
        # bytes both ways: predict_request_bytes writes the request; the reply is read by _replies (a
        # layout seen before, with new numbers) or parsed by protobuf
        self._predict = self._channel.unary_unary(PREDICT_METHOD)
        self._replies = Templates(1, "outputs")
        self._metadata = self._channel.unary_unary(
            METADATA_METHOD,
            request_serializer=serving_pb2.GetModelMetadataRequest.SerializeToString,
            response_deserializer=serving_pb2.GetModelMetadataResponse.FromString,
        )
        self._status = self._channel.unary_unary(
            STATUS_METHOD,
            request_serializer=serving_pb2.GetModelStatusRequest.SerializeToString,
            response_deserializer=serving_pb2.GetModelStatusResponse.FromString,
        )

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.target!r}, timeout={self.timeout}{', tls=True' if self.tls else ''})"

    # -- transport ------------------------------------------------------------------------------
    def _call(self, method: Callable, request, timeout: float | None):
        """Invoke `method` with a deadline, retrying UNAVAILABLE with backoff until that deadline.

        Raises:
            GenserveError: the first non-UNAVAILABLE failure; or, when the deadline ran out (or the
                policy's attempts did), UNAVAILABLE / DEADLINE_EXCEEDED with one line saying how many
                attempts were made over how long.
        """
        budget = self.timeout if timeout is None else float(timeout)
        if not budget > 0:
            raise ValueError(f"timeout must be positive, got {budget}")
        if self._unusable is not None:
            raise self._unusable
        started = time.monotonic()
        deadline = started + budget
        limit = self.retry.max_attempts
        attempt, waiting = 0, False
        while True:
            attempt += 1
            try:
                return method(request, timeout=max(deadline - time.monotonic(), 0.001))
            except grpc.RpcError as e:
                code, details = e.code(), e.details() or ""
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise GenserveError(code, self._gave_up(details, attempt, started, budget, code)) from None
            if code != grpc.StatusCode.UNAVAILABLE:
                raise GenserveError(code, details) from None
            cause = diagnose(self.target, details, self.tls)
            if cause is not None:  # DNS, a REST port, TLS mismatch: waiting cannot fix it
                raise GenserveError(code, cause) from None
            left = deadline - time.monotonic()
            if (limit is not None and attempt >= limit) or left < 0.01:
                raise GenserveError(code, self._gave_up(details, attempt, started, budget, code)) from None
            # Sleep the backoff, but keep a last attempt inside the deadline. Across replicas the first
            # retry goes at once: round_robin sends it to another replica (a dead one has left the ring).
            wait = 0.0 if self.replicated and attempt == 1 else \
                max(0.0, min(self.retry.backoff(attempt, self._rng), left - 0.01))
            if self.on_wait is not None and not waiting and time.monotonic() + wait - started >= 1.0:
                waiting = True
                self.on_wait(f"waiting for {self.target} ({waiting_reason(details)}; retrying for up to "
                             f"{budget:g} s) ...")
            time.sleep(wait)

    def _gave_up(self, details: str, attempts: int, started: float, budget: float,
                 code: grpc.StatusCode) -> str:
        elapsed = time.monotonic() - started
        hint = ("is the server running?" if code == grpc.StatusCode.UNAVAILABLE
                else "the server did not answer in time;")
        return (f"{details or code.name.lower()} ({self.target}: {attempts} attempt(s) in "
                f"{elapsed:.2f} s, deadline {budget:g} s; {hint} raise --timeout to wait longer)")

    # -- PredictionService/Predict --------------------------------------------------------------
    def _exchange(self, model: str, inputs: Inputs, signature: str | None, version: int | None,
                  version_label: str | None, output_filter: Iterable[str] | None,
                  timeout: float | None) -> bytes:
        """The one Predict call under predict, predict_reply and predict_response: the request's bytes
        out, the reply's bytes back (subclasses wrap it to count calls or stop a job)."""
        request = predict_request_bytes(model, inputs, signature, version, version_label, output_filter)
        return self._call(self._predict, request, timeout)

    def _replied(self, model: str, model_spec) -> None:
        """Called with each Predict reply's model_spec (subclasses note which version answered)."""

    def predict_response(self, model: str, inputs: Inputs, signature: str | None = None,
                         version: int | None = None, version_label: str | None = None,
                         output_filter: Iterable[str] | None = None,
                         timeout: float | None = None) -> serving_pb2.PredictResponse:
        """Like predict(), but returns the undecoded PredictResponse (its model_spec says which
        version answered)."""
        response = _parse_response(self._exchange(model, inputs, signature, version, version_label,
                                                  output_filter, timeout))
        self._replied(model, response.model_spec)
        return response

    def predict_reply(self, model: str, inputs: Inputs, signature: str | None = None,
                      version: int | None = None, version_label: str | None = None,
                      output_filter: Iterable[str] | None = None, timeout: float | None = None) -> Reply:
        """Like predict(), with the reply's model_spec (which version answered) beside the outputs."""
        raw = self._exchange(model, inputs, signature, version, version_label, output_filter, timeout)
        known = self._replies.read_or_learn(raw, _parse_response)  # a layout seen before: no message built
        self._replied(model, known[0].model_spec)
        return Reply(known[0].model_spec, known[1])

    def predict(self, model: str, inputs: Inputs, signature: str | None = None,
                version: int | None = None, version_label: str | None = None,
                output_filter: Iterable[str] | None = None,
                timeout: float | None = None) -> Outputs:
        """Run one signature of a served model.

        Args:
            model: the served model name, e.g. "vae".
            inputs: tensor key -> array (numbers, or str/bytes for string tensors), each with the
                leading batch dimension the signature expects.
            signature: the signature name; None uses the server's "serving_default".
            version: a specific version; None (the default) asks for the latest.
            version_label: a version label from the server's config (instead of `version`).
            output_filter: only these output keys are computed and returned.
            timeout: this call's deadline in seconds (retries included); default: the client's.

        Returns:
            output key -> numpy array (strings as object arrays of bytes).

        Raises:
            GenserveError: the server refused or failed (NOT_FOUND, INVALID_ARGUMENT, ...), the
                deadline passed (DEADLINE_EXCEEDED) or no server answered (UNAVAILABLE).
            ValueError: an input of a dtype a TensorProto cannot carry, or version and
                version_label given together.
        """
        return self.predict_reply(model, inputs, signature, version, version_label, output_filter,
                                  timeout).outputs

    def predict_fn(self, model: str, signature: str | None = None, version: int | None = None,
                   output_filter: Iterable[str] | None = None,
                   timeout: float | None = None) -> Callable[[Inputs], Outputs]:
        """A plain `inputs -> outputs` callable for one signature, to inject into pure client
        algorithms (sampling, L-BFGS, grid rendering) that must not know about gRPC.

        Returns:
            fn(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]; raises what predict() raises.
        """
        keys = None if output_filter is None else list(output_filter)

        def call(inputs: Inputs) -> Outputs:
            return self.predict(model, inputs, signature=signature, version=version,
                                output_filter=keys, timeout=timeout)

        call.__name__ = f"predict_{model}_{signature or 'default'}"
        return call

    # -- PredictionService/GetModelMetadata -----------------------------------------------------
    def metadata_response(self, model: str, version: int | None = None,
                          version_label: str | None = None, timeout: float | None = None):
        """The undecoded GetModelMetadataResponse (metadata_field "signature_def"); its
        model_spec.version says which version the server resolved the request to."""
        request = serving_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        model_spec(request.model_spec, model, None, version, version_label)
        return self._call(self._metadata, request, timeout)

    def metadata(self, model: str, version: int | None = None, version_label: str | None = None,
                 timeout: float | None = None) -> dict[str, SignatureInfo]:
        """The model's signatures, from GetModelMetadata (metadata_field "signature_def").

        Returns:
            signature name -> SignatureInfo (includes "serving_default").

        Raises:
            GenserveError: the RPC failed, or the reply carries no SignatureDefMap (code INTERNAL).
        """
        response = self.metadata_response(model, version, version_label, timeout)
        return signatures_from_metadata(response, model)

    def resolve_version(self, model: str, version: int | None = None,
                        version_label: str | None = None, timeout: float | None = None) -> int:
        """The version number the server serves for this request (the latest when none is given).

        Raises:
            GenserveError: the RPC failed (NOT_FOUND for an unknown model/version), or the server's
                metadata reply names no version (code INTERNAL).
        """
        return self.pinned(model, version, version_label, timeout).version

    def pinned(self, model: str, version: int | None = None, version_label: str | None = None,
               timeout: float | None = None, lazy: bool = False) -> "PinnedModel":
        """The model at ONE version for a whole job (genserve.clients.pinned.PinnedModel): the version
        is read once (the latest unless `version`/`version_label` say otherwise) and sent with every
        later request, so a version loaded mid-job never answers half of it.

            with Client(target) as client:
                style = client.pinned("style")       # style.version == 3, style.signatures
                style.predict({...}, signature="targets"); style.predict({...}, signature="step")

        Args:
            lazy: send no request now; the first answer (a Predict reply's or GetModelMetadata's
                model_spec.version) fixes the version. Default: read it now with GetModelMetadata.

        Raises:
            GenserveError: as resolve_version (not with lazy).
        """
        from genserve.clients.pinned import PinnedModel

        pin = PinnedModel(self, model, version, version_label=version_label, confirmed=False)
        if not lazy:
            pin.resolve(timeout)
        return pin

    # -- ModelService/GetModelStatus ------------------------------------------------------------
    def status(self, model: str, version: int | None = None, version_label: str | None = None,
               timeout: float | None = None) -> list[VersionStatus]:
        """The versions the server knows for `model` and their states, newest first.

        Returns:
            [VersionStatus(version, state_name), ...], e.g. [(2, "AVAILABLE"), (1, "END")].

        Raises:
            GenserveError: NOT_FOUND for an unknown model or version, or any other RPC failure.
        """
        request = serving_pb2.GetModelStatusRequest()
        model_spec(request.model_spec, model, None, version, version_label)
        response = self._call(self._status, request, timeout)
        states = serving_pb2.ModelVersionStatus.State
        found = []
        for entry in response.model_version_status:
            try:
                state = states.Name(entry.state)
            except ValueError:
                state = f"STATE_{entry.state}"
            found.append(VersionStatus(int(entry.version), state))
        return sorted(found, key=lambda s: -s.version)
