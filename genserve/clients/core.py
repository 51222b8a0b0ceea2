"""The thin gRPC client: Predict, GetModelMetadata and GetModelStatus against TF Serving or genserve.

No TensorFlow here: requests are genserve's own wire-compatible messages (genserve/wire/protos),
sent by TF Serving's method paths, so the same client talks to `tensorflow_model_server` and to
`genserve serve`. Every call has a deadline; UNAVAILABLE (server not up yet, connection refused or
reset) is retried with exponential backoff inside that deadline; every other failure surfaces at once
as `GenserveError` carrying the gRPC code and details.

    python -c "from genserve.clients import Client; c = Client('127.0.0.1:8500', timeout=2); print(c.status('vae'))"
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import grpc
import numpy as np

from genserve.wire.codec import dtype_name, from_tensor_proto, to_tensor_proto
from genserve.wire.protos import serving_pb2

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
METADATA_METHOD = "/tensorflow.serving.PredictionService/GetModelMetadata"
STATUS_METHOD = "/tensorflow.serving.ModelService/GetModelStatus"
SIGNATURE_DEF_MAP_TYPE = "tensorflow.serving.SignatureDefMap"  # the Any's type name TF Serving packs

# Large enough for a 1024x1024x3 float32 image (12 MiB raw) even when a server answers in the *_val
# fields, where a negative int32 costs up to 10 bytes (a 3 MB uint8 reply becomes ~6 MB).
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

Inputs = Mapping[str, Any]
Outputs = dict[str, np.ndarray]


class GenserveError(Exception):
    """A failed RPC: the gRPC status code and the server's (or the client's) explanation.

    Attributes:
        code: a `grpc.StatusCode`, e.g. `grpc.StatusCode.NOT_FOUND`.
        details: the human-readable message.
    """

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(code, details)
        self.code = code
        self.details = details

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for UNAVAILABLE, bounded by the call's deadline, not by a count.

    The wait after failed attempt k is initial_backoff * multiplier**(k-1), capped at max_backoff,
    then stretched by a random factor in [1, 1 + jitter] so clients that lost the same server do not
    come back in lock step (gRPC's connection-backoff scheme,
    https://github.com/grpc/grpc/blob/master/doc/connection-backoff.md). Retries go on until the
    deadline: a server restarting within a call's `timeout` is reached. `max_attempts` (None: no
    limit) caps the attempts; `RetryPolicy.disabled()` (max_attempts=1) turns retries off.
    """

    max_attempts: int | None = None
    initial_backoff: float = 0.1  # seconds
    multiplier: float = 2.0
    max_backoff: float = 1.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1 (or None), got {self.max_attempts}")
        if not (self.initial_backoff > 0 and self.multiplier >= 1 and self.max_backoff > 0
                and 0 <= self.jitter <= 1):
            raise ValueError("need initial_backoff > 0, multiplier >= 1, max_backoff > 0, 0 <= jitter <= 1")

    @classmethod
    def disabled(cls) -> "RetryPolicy":
        """One attempt only: UNAVAILABLE surfaces at once."""
        return cls(max_attempts=1)

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait after failed attempt number `attempt` (1-based), jitter included."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** min(attempt - 1, 64))
        return base * (1.0 + self.jitter * (rng or random).random())


@dataclass(frozen=True)
class SignatureInfo:
    """One served signature as GetModelMetadata describes it.

    `inputs` / `outputs` map a tensor key to (dtype name, shape): dtype names are the contract's
    ("float32", "int32", "string", ...); a shape is a tuple with None for an unknown size (-1), or
    None when even the rank is unknown.
    """

    inputs: dict[str, tuple[str, tuple | None]] = field(default_factory=dict)
    outputs: dict[str, tuple[str, tuple | None]] = field(default_factory=dict)
    method_name: str = ""


class VersionStatus(NamedTuple):
    """One entry of GetModelStatus: a version and its state ("AVAILABLE", "LOADING", "END", ...)."""

    version: int
    state: str


def _tensor_info(info) -> tuple[str, tuple | None]:
    shape = info.tensor_shape
    if shape.unknown_rank:
        return dtype_name(info.dtype), None
    return dtype_name(info.dtype), tuple(None if d.size < 0 else int(d.size) for d in shape.dim)


def _model_spec(spec, model: str, signature: str | None, version: int | None,
                version_label: str | None) -> None:
    """Fill a ModelSpec in place; version stays unset for "latest" (a set 0 would mean version 0)."""
    if version is not None and version_label is not None:
        raise ValueError("give either version or version_label, not both")
    spec.name = model
    if signature:
        spec.signature_name = signature
    if version is not None:
        spec.version.SetInParent()  # presence even for version 0
        spec.version.value = int(version)
    elif version_label is not None:
        spec.version_label = version_label


def predict_request(model: str, inputs: Inputs, signature: str | None = None,
                    version: int | None = None, version_label: str | None = None,
                    output_filter: Iterable[str] | None = None) -> serving_pb2.PredictRequest:
    """The PredictRequest that Client.predict sends (arguments as there).

    Raises:
        TypeError: inputs is not a mapping.
        ValueError: an input dtype a TensorProto cannot carry; version and version_label together.
    """
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must be a dict of tensor key -> array, got {type(inputs).__name__}")
    request = serving_pb2.PredictRequest()
    _model_spec(request.model_spec, model, signature, version, version_label)
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(to_tensor_proto(value))
    if output_filter is not None:
        if isinstance(output_filter, str):
            output_filter = [output_filter]
        request.output_filter.extend(output_filter)
    return request


def signatures_from_metadata(response, model: str = "") -> dict[str, SignatureInfo]:
    """Signature name -> SignatureInfo from a GetModelMetadataResponse (genserve's or TF's class).

    Raises:
        GenserveError: code INTERNAL when the reply carries no SignatureDefMap under "signature_def".
    """
    if "signature_def" not in response.metadata:
        raise GenserveError(grpc.StatusCode.INTERNAL,
                            f"GetModelMetadata for {model!r} returned no signature_def entry")
    packed = response.metadata["signature_def"]
    # Any.Unpack would compare full type names (genserve.wire vs tensorflow.serving) and refuse; the
    # bytes are compatible, so check the URL's type name and parse the value directly.
    type_name = packed.type_url.rsplit("/", 1)[-1]
    if type_name != SIGNATURE_DEF_MAP_TYPE:
        raise GenserveError(grpc.StatusCode.INTERNAL,
                            f"signature_def metadata of {model!r} has type {packed.type_url!r}, "
                            f"expected type.googleapis.com/{SIGNATURE_DEF_MAP_TYPE}")
    signature_map = serving_pb2.SignatureDefMap.FromString(packed.value)
    return {
        name: SignatureInfo(
            inputs={k: _tensor_info(v) for k, v in sorted(sig.inputs.items())},
            outputs={k: _tensor_info(v) for k, v in sorted(sig.outputs.items())},
            method_name=sig.method_name,
        )
        for name, sig in sorted(signature_map.signature_def.items())
    }


@dataclass(frozen=True)
class TlsSettings:
    """TLS for Clients built without TLS arguments (PEM bytes or file paths, as Client takes them)."""

    enabled: bool = False
    root_certificates: bytes | str | None = None
    client_cert: bytes | str | None = None
    client_key: bytes | str | None = None


_default_tls = TlsSettings()


def set_default_tls(settings: TlsSettings | None) -> TlsSettings:
    """Set the TLS used by every later Client(...) given no TLS arguments (the CLI's --tls options
    do this for the length of a command). Returns the previous settings, to restore."""
    global _default_tls
    previous, _default_tls = _default_tls, settings or TlsSettings()
    return previous


def _pem(value: bytes | str | None, what: str) -> bytes | None:
    """PEM bytes from bytes, PEM text or a file path. Raises ValueError with one line."""
    if value is None or isinstance(value, bytes):
        return value
    text = str(value)
    if text.lstrip().startswith("-----BEGIN "):
        return text.encode()
    try:
        data = open(text, "rb").read()
    except OSError as e:
        raise ValueError(f"cannot read the {what} {text}: {e.strerror or e}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{text} is not a PEM file (the {what}; expected '-----BEGIN ...')")
    return data


def channel_credentials(tls: bool | None = None, root_certificates=None, client_cert=None,
                        client_key=None):
    """grpc.ChannelCredentials for Client's TLS arguments, or None for a plaintext channel.

    Raises:
        ValueError: only one of client_cert / client_key; TLS material with tls=False; an unreadable
            or non-PEM file.
    """
    given = any(v is not None for v in (root_certificates, client_cert, client_key))
    if tls is None and not given:
        d = _default_tls
        tls, root_certificates, client_cert, client_key = (d.enabled, d.root_certificates, d.client_cert,
                                                           d.client_key)
    elif tls is None:
        tls = True
    elif not tls and given:
        raise ValueError("root_certificates / client_cert / client_key need tls=True")
    if not tls:
        return None
    if (client_cert is None) != (client_key is None):
        raise ValueError("give both the client certificate and its key (mutual TLS), or neither")
    return grpc.ssl_channel_credentials(root_certificates=_pem(root_certificates, "CA certificate"),
                                        private_key=_pem(client_key, "client key"),
                                        certificate_chain=_pem(client_cert, "client certificate"))


class Client:
    """A connection to a TF-Serving-compatible gRPC server.

    Use as a context manager (or call close()); one Client is safe to share between threads.

        with Client("127.0.0.1:8500") as client:
            out = client.predict("vae", {"z": z}, signature="decode")   # {"images": (B, 28, 28, 1)}

    Args:
        target: "host:port" of the server.
        timeout: default deadline in seconds for each call, retries included.
        max_message_bytes: send and receive limit set on the channel (gRPC's default is 4 MiB).
        retry: backoff for UNAVAILABLE, until each call's deadline; RetryPolicy.disabled() (one
            attempt) turns retries off.
        options: extra gRPC channel options, appended after genserve's (e.g.
            ("grpc.ssl_target_name_override", "localhost") when the certificate names another host).
        tls: connect over TLS (grpc.secure_channel). None: TLS when any of the three below is given,
            else the process default (set_default_tls; the CLI's --tls / $GENSERVE_TLS), else plaintext.
        root_certificates: PEM bytes, or the path of a PEM file, of the CA that signed the server's
            certificate (None with TLS: the system's roots).
        client_cert, client_key: PEM bytes or paths of this client's certificate and key, for a server
            that verifies clients (SSLConfig client_verify). Both or neither.
    """

    def __init__(self, target: str, timeout: float = 30.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 retry: RetryPolicy = RetryPolicy(),
                 options: Iterable[tuple[str, Any]] = (), tls: bool | None = None,
                 root_certificates: bytes | str | None = None, client_cert: bytes | str | None = None,
                 client_key: bytes | str | None = None):
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.target = target
        self.timeout = float(timeout)
        self.retry = retry
        self._rng = random.Random()
        channel_options = [
            ("grpc.max_send_message_length", int(max_message_bytes)),
            ("grpc.max_receive_message_length", int(max_message_bytes)),
            # Reconnect quickly after a refused connection, so a retry can reach a server that has
            # just come up (gRPC's default first reconnect backoff is 1 s).
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            *options,
        ]
        credentials = channel_credentials(tls, root_certificates, client_cert, client_key)
        self.tls = credentials is not None
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=channel_options)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=channel_options)
        self._predict = self._channel.unary_unary(
            PREDICT_METHOD,
            request_serializer=serving_pb2.PredictRequest.SerializeToString,
            response_deserializer=serving_pb2.PredictResponse.FromString,
        )
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
        started = time.monotonic()
        deadline = started + budget
        limit = self.retry.max_attempts
        attempt = 0
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
            left = deadline - time.monotonic()
            if (limit is not None and attempt >= limit) or left < 0.01:
                raise GenserveError(code, self._gave_up(details, attempt, started, budget, code)) from None
            # Sleep the backoff, but keep a last attempt inside the deadline.
            time.sleep(max(0.0, min(self.retry.backoff(attempt, self._rng), left - 0.01)))

    def _gave_up(self, details: str, attempts: int, started: float, budget: float,
                 code: grpc.StatusCode) -> str:
        elapsed = time.monotonic() - started
        hint = ("is the server running?" if code == grpc.StatusCode.UNAVAILABLE
                else "the server did not answer in time;")
        return (f"{details or code.name.lower()} ({self.target}: {attempts} attempt(s) in "
                f"{elapsed:.2f} s, deadline {budget:g} s; {hint} raise --timeout to wait longer)")

    # -- PredictionService/Predict --------------------------------------------------------------
    def predict_response(self, model: str, inputs: Inputs, signature: str | None = None,
                         version: int | None = None, version_label: str | None = None,
                         output_filter: Iterable[str] | None = None,
                         timeout: float | None = None) -> serving_pb2.PredictResponse:
        """Like predict(), but returns the undecoded PredictResponse (its model_spec says which
        version answered)."""
        request = predict_request(model, inputs, signature, version, version_label, output_filter)
        return self._call(self._predict, request, timeout)

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
        response = self.predict_response(model, inputs, signature, version, version_label,
                                         output_filter, timeout)
        return {key: from_tensor_proto(tensor) for key, tensor in response.outputs.items()}

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
        _model_spec(request.model_spec, model, None, version, version_label)
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
               timeout: float | None = None) -> "PinnedModel":
        """The model at ONE version for a whole job: the version is read once (GetModelMetadata's
        model_spec.version; the latest unless `version`/`version_label` say otherwise) and sent with
        every later request, so a version loaded mid-job never answers half of it.

            with Client(target) as client:
                style = client.pinned("style")       # style.version == 3, style.signatures
                style.predict({...}, signature="targets"); style.predict({...}, signature="step")

        Raises:
            GenserveError: as resolve_version.
        """
        response = self.metadata_response(model, version, version_label, timeout)
        signatures = signatures_from_metadata(response, model)
        if not response.model_spec.HasField("version"):
            if version is None:
                raise GenserveError(grpc.StatusCode.INTERNAL,
                                    f"{self.target}: GetModelMetadata for {model!r} names no version; "
                                    "pass an explicit version to pin")
            return PinnedModel(self, model, int(version), signatures)
        return PinnedModel(self, model, int(response.model_spec.version.value), signatures)

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
        _model_spec(request.model_spec, model, None, version, version_label)
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


class PinnedModel:
    """A served model pinned to one version (see `Client.pinned`): every call sends that version.

    When the server no longer serves the version (it was unloaded mid-job), calls raise
    GenserveError NOT_FOUND with a message that says so, instead of silently switching versions.

    Attributes:
        client, model, version: the client, the model name and the pinned version.
        signatures: signature name -> SignatureInfo, read with the version.
    """

    def __init__(self, client: Client, model: str, version: int,
                 signatures: dict[str, SignatureInfo] | None = None):
        self.client, self.model, self.version = client, model, int(version)
        self.signatures = signatures if signatures is not None else {}

    def __repr__(self) -> str:
        return f"PinnedModel({self.model!r}, version={self.version}, target={self.client.target!r})"

    def _gone(self, error: GenserveError) -> GenserveError:
        if error.code != grpc.StatusCode.NOT_FOUND:
            return error
        return GenserveError(error.code, f"model {self.model!r} version {self.version} is no longer "
                                         f"served by {self.client.target} (this job pinned it when it "
                                         f"started; rerun to use the current version): {error.details}")

    def predict_response(self, inputs: Inputs, signature: str | None = None,
                         output_filter: Iterable[str] | None = None,
                         timeout: float | None = None) -> serving_pb2.PredictResponse:
        """Client.predict_response at the pinned version."""
        try:
            return self.client.predict_response(self.model, inputs, signature, version=self.version,
                                                output_filter=output_filter, timeout=timeout)
        except GenserveError as e:
            raise self._gone(e) from None

    def predict(self, inputs: Inputs, signature: str | None = None,
                output_filter: Iterable[str] | None = None, timeout: float | None = None) -> Outputs:
        """Client.predict at the pinned version (raises NOT_FOUND, explained, if it is gone)."""
        response = self.predict_response(inputs, signature, output_filter, timeout)
        return {key: from_tensor_proto(tensor) for key, tensor in response.outputs.items()}

    def predict_fn(self, signature: str | None = None, output_filter: Iterable[str] | None = None,
                   timeout: float | None = None) -> Callable[[Inputs], Outputs]:
        """`inputs -> outputs` for one signature at the pinned version (see Client.predict_fn)."""
        keys = None if output_filter is None else list(output_filter)

        def call(inputs: Inputs) -> Outputs:
            return self.predict(inputs, signature=signature, output_filter=keys, timeout=timeout)

        call.__name__ = f"predict_{self.model}_v{self.version}_{signature or 'default'}"
        return call


class LatentImageModel:
    """A served model that maps latent vectors z (B, latent) to images (the VAE's `decode`, the GAN's
    `generate`), pinned to one version for the whole job.

    The version is read once (GetModelMetadata's model_spec.version) on first use and sent with every
    later request; if that version stops being served, the calls fail with NOT_FOUND saying so.
    Subclasses set `FAMILY` (for messages), `LATENT_SIGNATURE` (the signature whose input `z` fixes
    the latent size) and `REQUIRED_SIGNATURES`.

    Args:
        client: an open Client.
        model: the served model name.
        version: a specific version, or None for the latest when the job starts.
    """

    FAMILY = "latent model"
    LATENT_SIGNATURE = ""
    REQUIRED_SIGNATURES: tuple = ()

    def __init__(self, client, model: str, version: int | None = None):
        self.client, self.model, self.version = client, model, version
        self._latent_dim: int | None = None
        self._pinned = None

    def pinned(self) -> "PinnedModel":
        """The PinnedModel this job talks to (resolved on first use)."""
        if self._pinned is None:
            self._pinned = self.client.pinned(self.model, version=self.version)
            self.version = self._pinned.version
        return self._pinned

    @property
    def latent_dim(self) -> int:
        """The latent size, read once from GetModelMetadata (the shape of `z` in LATENT_SIGNATURE).

        Raises:
            GenserveError: the model is unknown or the server unreachable.
            ValueError: the served model lacks the family's signatures or a fixed latent size.
        """
        if self._latent_dim is None:
            signatures = self.pinned().signatures
            sig = signatures.get(self.LATENT_SIGNATURE)
            missing = [name for name in self.REQUIRED_SIGNATURES if name not in signatures]
            if sig is None or "z" not in sig.inputs or missing:
                wanted = "/".join(repr(n) for n in self.REQUIRED_SIGNATURES or (self.LATENT_SIGNATURE,))
                raise ValueError(f"model {self.model!r} has no {wanted} signature(s) with input 'z' "
                                 f"(signatures: {', '.join(sorted(signatures))}); is it a {self.FAMILY}?")
            _, shape = sig.inputs["z"]
            if shape is None or len(shape) != 2 or shape[1] is None:
                raise ValueError(f"model {self.model!r} does not fix the latent size (z has shape {shape})")
            self._latent_dim = int(shape[1])
        return self._latent_dim
