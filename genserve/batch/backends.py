"""Where a batch job's requests go: a server over gRPC (`--target`) or SavedModels in process (`--models-dir`).

Both give the runners the same three calls:

    backend.version(model)                         the version pinned for the whole job
    backend.input_shape(model, signature, key)     a static input shape (e.g. the VAE's latent size)
    backend.predict(model, signature, inputs, output_keys=None) -> {key: ndarray}

`RemoteBackend` is the thin client (no TensorFlow import: a test checks it); it reads each model's
newest AVAILABLE version from GetModelStatus once and sends every request for that version, so a
version loaded mid-job never mixes into it and a version that disappears fails items clearly.
`LocalBackend` loads `<models_dir>/<model>/<newest version>` once into a graph Session with
`genserve.serving.loader` (exactly TF Serving's execution path) and runs signatures by tensor names.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import numpy as np


class ModelUnavailable(RuntimeError):
    """The model (or its pinned version) cannot serve this job; items that need it fail with this."""


class _Counting:
    """Counts requests per (model, signature): the grouping tests and the benchmark read `calls`."""

    def __init__(self):
        self.calls: Counter = Counter()
        self.cache: dict = {}  # runners keep per-model facts here (e.g. the text vocabulary)
        self._count_lock = threading.Lock()
        self._versions: dict[str, int] = {}
        self._version_lock = threading.Lock()

    def _count(self, model: str, signature: str) -> None:
        with self._count_lock:
            self.calls[(model, signature)] += 1

    @property
    def requests(self) -> int:
        return sum(self.calls.values())

    def version(self, model: str) -> int:
        """The version of `model` pinned for this job (found on first use, then fixed).

        Raises:
            ModelUnavailable: no available version.
        """
        with self._version_lock:
            if model not in self._versions:
                self._versions[model] = self._find_version(model)
            return self._versions[model]

    def pinned(self) -> dict[str, int]:
        return dict(self._versions)

    def _find_version(self, model: str) -> int:  # pragma: no cover - overridden
        raise NotImplementedError


class RemoteBackend(_Counting):
    """A TF-Serving-compatible server at `target`, through genserve's thin gRPC client.

    Args:
        target: "host:port".
        timeout: deadline per request in seconds (UNAVAILABLE retried inside it).
        versions: versions to pin instead of asking the server (model -> version).
    """

    kind = "target"
    PIN_TIMEOUT = 20.0  # seconds to find a model's version (retries of UNAVAILABLE included)

    def __init__(self, target: str, timeout: float = 120.0, versions: Mapping[str, int] | None = None):
        super().__init__()
        from genserve.clients.core import Client

        self.target, self.timeout = target, float(timeout)
        self.client = Client(target, timeout=timeout)
        self._versions.update(versions or {})
        self._metadata: dict[str, Any] = {}

    def _find_version(self, model: str) -> int:
        from genserve.clients.core import GenserveError

        try:  # a wrong --target should not cost the full per-request deadline for every model
            states = self.client.status(model, timeout=min(self.timeout, self.PIN_TIMEOUT))
        except GenserveError as e:
            raise ModelUnavailable(f"model {model!r} at {self.target}: {e.code.name}: {e.details}") from None
        available = [s.version for s in states if s.state == "AVAILABLE"]
        if not available:
            raise ModelUnavailable(f"model {model!r} at {self.target} has no AVAILABLE version "
                                   f"({', '.join(f'{v}: {s}' for v, s in states) or 'none'})")
        return max(available)

    def input_shape(self, model: str, signature: str, key: str) -> tuple | None:
        from genserve.clients.core import GenserveError

        if model not in self._metadata:
            try:
                self._metadata[model] = self.client.metadata(model, version=self.version(model))
            except GenserveError as e:
                raise ModelUnavailable(f"{model!r} version {self.version(model)} (pinned for this job): "
                                       f"GetModelMetadata: {e.code.name}: {e.details}") from None
        sig = self._metadata[model].get(signature)
        if sig is None or key not in sig.inputs:
            raise ModelUnavailable(f"model {model!r} has no signature {signature!r} with input {key!r}")
        return sig.inputs[key][1]

    def predict(self, model: str, signature: str, inputs: Mapping[str, np.ndarray],
                output_keys=None) -> dict[str, np.ndarray]:
        from genserve.clients.core import GenserveError

        version = self.version(model)
        self._count(model, signature)
        try:
            return self.client.predict(model, dict(inputs), signature=signature, version=version,
                                       output_filter=output_keys)
        except GenserveError as e:
            if e.code.name == "NOT_FOUND":
                raise ModelUnavailable(f"{model!r} version {version} (pinned for this job) is not served "
                                       f"by {self.target} any more: {e.details}") from None
            raise

    def close(self) -> None:
        self.client.close()


class LocalBackend(_Counting):
    """SavedModels under `models_dir`, run in this process by `genserve.serving.loader` (graph Session).

    Args:
        models_dir: TF Serving's layout, `<models_dir>/<model>/<version>/saved_model.pb`.
        intra_op_threads, inter_op_threads: the Session's thread pools (0 = TensorFlow picks).
        versions: versions to use instead of the newest (model -> version).
    """

    kind = "models-dir"

    def __init__(self, models_dir, intra_op_threads: int = 0, inter_op_threads: int = 0,
                 versions: Mapping[str, int] | None = None):
        super().__init__()
        self.models_dir = Path(models_dir)
        self.threads = (intra_op_threads, inter_op_threads)
        self._versions.update(versions or {})
        self._models: dict[str, Any] = {}
        self._load_lock = threading.Lock()

    def _find_version(self, model: str) -> int:
        folder = self.models_dir / model
        versions = [int(p.name) for p in folder.iterdir()
                    if p.name.isdigit() and (p / "saved_model.pb").is_file()] if folder.is_dir() else []
        if not versions:
            raise ModelUnavailable(f"no version of model {model!r} under {folder} "
                                   "(expected <models_dir>/<model>/<version>/saved_model.pb)")
        return max(versions)

    def _model(self, model: str):
        with self._load_lock:
            if model not in self._models:
                from genserve.serving.loader import load_saved_model, session_config

                path = self.models_dir / model / str(self.version(model))
                try:
                    self._models[model] = load_saved_model(path, config=session_config(*self.threads))
                except (RuntimeError, OSError) as e:
                    raise ModelUnavailable(str(e)) from None
            return self._models[model]

    def _signature(self, model: str, signature: str):
        from genserve.serving.errors import ServingError

        try:
            return self._model(model).signature(signature, model)
        except ServingError as e:
            raise ModelUnavailable(f"{model!r}: {e}") from None

    def input_shape(self, model: str, signature: str, key: str) -> tuple | None:
        spec = self._signature(model, signature).inputs.get(key)
        if spec is None:
            raise ModelUnavailable(f"model {model!r} has no signature {signature!r} with input {key!r}")
        return spec.shape

    def predict(self, model: str, signature: str, inputs: Mapping[str, np.ndarray],
                output_keys=None) -> dict[str, np.ndarray]:
        from genserve.wire.codec import dtype_name

        sig = self._signature(model, signature)
        self._count(model, signature)
        arrays = {}
        for key, spec in sig.inputs.items():
            if key not in inputs:
                raise ValueError(f"{model}/{signature}: missing input {key!r}")
            name = dtype_name(spec.dtype)
            arrays[key] = np.asarray(inputs[key], dtype=object if name == "string" else name)
        return sig.run(arrays, output_keys)

    def close(self) -> None:
        for model in self._models.values():
            model.close()
        self._models.clear()


def make_backend(target: str | None = None, models_dir=None, timeout: float = 120.0,
                 threads: tuple[int, int] = (0, 0), versions: Mapping[str, int] | None = None):
    """A RemoteBackend for `target`, or a LocalBackend for `models_dir` (exactly one of them)."""
    if (target is None) == (models_dir is None):
        raise ValueError("give exactly one of target or models_dir")
    if target is not None:
        return RemoteBackend(target, timeout=timeout, versions=versions)
    return LocalBackend(models_dir, *threads, versions=versions)
