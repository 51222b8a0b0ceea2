"""The one pinning rule: a job talks to ONE version of a served model from its first answer to its last.

A version exported (or unloaded) mid-job must never answer half of it: the style job's `targets` and
`step`, the text session's `info` and `step`s, the batches of one `encode`, the two requests of a GAN
interpolation. `PinnedModel` holds that version and sends it with every request; if the server stops
serving it, calls fail with NOT_FOUND saying so, never silently switching. Every family client
(`TextModel`, `VAEModel`, `GANModel`, `RemoteStyle`, `RemoteDream`) and the batch backends pin
through it; `Client.pinned(model, version=None, version_label=None)` is the entry point.

    python -c "from genserve.clients import Client; print(Client('127.0.0.1:8500').pinned('vae'))"

The version is learned either up front (GetModelMetadata, `Client.pinned`'s default: the signatures
come with it) or from the first answer (`lazy=True`: a Predict reply's model_spec.version, so a text
session's first `info` request pins it without an extra round trip).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from genserve.clients.messages import GenserveError, SignatureInfo

# grpc and the protos load on the first request, so importing a family module (a pure algorithm plus
# its PinnedJob) stays cheap.
Inputs = Mapping[str, Any]
Outputs = dict


class PinnedModel:
    """A served model pinned to one version (see `Client.pinned`): every call sends that version.

    Args:
        client: an open genserve.clients.Client.
        model: the served model name.
        version: the version to pin; None: the version of the first answer (the latest unless
            `version_label` names one).
        signatures: signature name -> SignatureInfo when already known (else read on first use).
        version_label: a label from the server's config, resolved by the first answer.
        confirmed: whether a server already answered for `version` (default: when it is given), so
            that a NOT_FOUND means "no longer served" rather than "never existed".

    Attributes:
        client, model, version: the client, the model name and the pinned version (None until known).
        requests: RPCs this PinnedModel has sent (Predict and GetModelMetadata).
    """

    def __init__(self, client, model: str, version: int | None = None,
                 signatures: dict[str, SignatureInfo] | None = None, *, version_label: str | None = None,
                 confirmed: bool | None = None):
        if version is not None and version_label is not None:
            raise ValueError("give either version or version_label, not both")
        self.client, self.model = client, model
        self.version = None if version is None else int(version)
        self.version_label = version_label
        self._signatures = signatures
        self._confirmed = version is not None if confirmed is None else confirmed
        self._lock = threading.Lock()
        self.requests = 0

    def __repr__(self) -> str:
        return f"PinnedModel({self.model!r}, version={self.version}, target={self.client.target!r})"

    # -- the version ------------------------------------------------------------------------------
    def _spec(self) -> dict:
        if self.version is not None:
            return {"version": self.version}
        return {"version_label": self.version_label}

    def _learn(self, reply_spec) -> None:
        """Fix the version from a reply's model_spec (the first answer wins; later ones must agree)."""
        with self._lock:
            if self.version is None and reply_spec.HasField("version"):
                self.version, self.version_label = int(reply_spec.version.value), None
            self._confirmed = self._confirmed or self.version is not None

    def _explain(self, error: GenserveError) -> GenserveError:
        if error.code.name != "NOT_FOUND":
            return error
        if not self._confirmed:  # asked for a version that may never have existed: say which are served
            if self.version is None and self.version_label is None:
                return error
            try:
                served = ", ".join(str(s.version) for s in self.client.status(self.model)
                                   if s.state == "AVAILABLE") or "none"
            except Exception:  # noqa: BLE001 - the original error is the one to report
                return error
            return type(error)(error.code, f"{error.details} (model {self.model!r} serves version(s): "
                                           f"{served})")
        return type(error)(error.code, f"version {self.version} of model {self.model!r} is no longer "
                                         f"served by {self.client.target} (this job pinned it when it "
                                         f"started; a newer export replaced it?); run again to use the "
                                         f"current version ({error.details})")

    def resolve(self, timeout: float | None = None) -> "PinnedModel":
        """Read the version (if not yet known) and the signatures with one GetModelMetadata.

        Raises:
            GenserveError: the RPC failed (NOT_FOUND for an unknown model or version), or the reply
                names no version and none was given (code INTERNAL).
        """
        from genserve.clients.messages import GenserveError, signatures_from_metadata

        if self._signatures is not None and self.version is not None:
            return self
        self.requests += 1
        try:
            response = self.client.metadata_response(self.model, timeout=timeout, **self._spec())
        except GenserveError as e:
            raise self._explain(e) from None
        signatures = signatures_from_metadata(response, self.model)
        self._learn(response.model_spec)
        if self.version is None:
            import grpc

            raise GenserveError(grpc.StatusCode.INTERNAL,
                                f"{self.client.target}: GetModelMetadata for {self.model!r} names no "
                                "version; pass an explicit version to pin")
        self._signatures = signatures
        return self

    @property
    def signatures(self) -> dict[str, SignatureInfo]:
        """Signature name -> SignatureInfo of the pinned version (one GetModelMetadata, then cached)."""
        return self.resolve()._signatures

    # -- Predict at the pinned version ------------------------------------------------------------
    def _ask(self, method: Callable, inputs: Inputs, signature, output_filter, timeout):
        """`method` (a Client's predict_response or predict_reply) at the pinned version; the first
        answer pins it if still open."""
        from genserve.clients.messages import GenserveError

        self.requests += 1
        try:
            reply = method(self.model, inputs, signature, output_filter=output_filter, timeout=timeout,
                           **self._spec())
        except GenserveError as e:
            raise self._explain(e) from None
        self._learn(reply.model_spec)
        return reply

    def predict_response(self, inputs: Inputs, signature: str | None = None,
                         output_filter: Iterable[str] | None = None, timeout: float | None = None):
        """Client.predict_response at the pinned version.

        Raises:
            GenserveError: as Client.predict; NOT_FOUND explained when the pinned version is gone.
        """
        return self._ask(self.client.predict_response, inputs, signature, output_filter, timeout)

    def predict(self, inputs: Inputs, signature: str | None = None,
                output_filter: Iterable[str] | None = None, timeout: float | None = None) -> Outputs:
        """Client.predict at the pinned version (raises NOT_FOUND, explained, if it is gone)."""
        return self._ask(self.client.predict_reply, inputs, signature, output_filter, timeout).outputs

    def predict_fn(self, signature: str | None = None, output_filter: Iterable[str] | None = None,
                   timeout: float | None = None) -> Callable[[Inputs], Outputs]:
        """`inputs -> outputs` for one signature at the pinned version (see Client.predict_fn)."""
        keys = None if output_filter is None else list(output_filter)

        def call(inputs: Inputs) -> Outputs:
            return self.predict(inputs, signature=signature, output_filter=keys, timeout=timeout)

        call.__name__ = f"predict_{self.model}_{signature or 'default'}"
        return call


class PinnedJob:
    """Base of the family clients: one model, pinned for the whole job on its first answer.

    Args:
        client: an open genserve.clients.Client.
        model: the served model name.
        version: a specific version, or None for the latest when the job starts.

    Attributes:
        version: the pinned version (None until the first answer).
        requests: RPCs sent for this job.
    """

    def __init__(self, client, model: str, version: int | None = None):
        self.client, self.model = client, model
        self._pin = PinnedModel(client, model, version, confirmed=False)  # Client.pinned(..., lazy=True)

    def pinned(self) -> PinnedModel:
        """The PinnedModel this job talks to."""
        return self._pin

    @property
    def version(self) -> int | None:
        return self._pin.version

    @property
    def requests(self) -> int:
        return self._pin.requests


class LatentImageModel(PinnedJob):
    """A served model that maps latent vectors z (B, latent) to images (the VAE's `decode`, the GAN's
    `generate`). Subclasses set `FAMILY` (for messages), `LATENT_SIGNATURE` (the signature whose input
    `z` fixes the latent size) and `REQUIRED_SIGNATURES`.
    """

    FAMILY = "latent model"
    LATENT_SIGNATURE = ""
    REQUIRED_SIGNATURES: tuple = ()

    def __init__(self, client, model: str, version: int | None = None):
        super().__init__(client, model, version)
        self._latent_dim: int | None = None

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

    def check_z(self, z) -> "np.ndarray":
        """z as float32 (B, latent_dim), checked before sending.

        Raises:
            ValueError: the wrong shape for this model, or non-finite values (the served graph also
                rejects them with INVALID_ARGUMENT).
        """
        import numpy as np

        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim or len(z) == 0:
            raise ValueError(f"z must have shape (B, {self.latent_dim}) for model {self.model!r}, "
                             f"got {z.shape}")
        if not np.all(np.isfinite(z)):
            raise ValueError("z must be finite (found NaN or Inf)")
        return z
