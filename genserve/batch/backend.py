"""Where a batch job's requests go: one TF-Serving-compatible server, over genserve's thin gRPC client.

    backend = open_backend(target="127.0.0.1:8500")          # a server (TF Serving or `genserve serve`)
    backend = open_backend(models_dir="models")          # genserve's own server, started in process

`--models-dir` starts `genserve.serving.server.ModelServer` on 127.0.0.1 (a free port, no REST, no
polling) and the job talks to it exactly as to `--target`, so both modes pick the same version (the
server's models.config policy and labels), refuse the same inputs (INVALID_ARGUMENT for a wrong dtype)
and never load a model from outside the folder: there is one backend, not two that can disagree.

The runners get:

    backend.version(model)            the version pinned for the whole job (Client.pinned, read once)
    backend.predict(model, signature, inputs, output_keys=None) -> {key: ndarray}
    backend.family(ModelClass, model) a family client (TextModel, VAEModel, GANModel) at that version

Every request goes through one `Client` subclass that counts it (the tests and the benchmark read
`calls`), refuses to start one once the job is stopping (`StopFlag`: a signal, or a server that stayed
unreachable), and turns an UNAVAILABLE that outlasted the client's retries into a stop of the whole job
instead of one failed item after another. With --target nothing here imports TensorFlow (tested).
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

from genserve.clients import Client, GenserveError

PIN_TIMEOUT = 20.0  # seconds to pin a model's version (UNAVAILABLE retried within it)
STOP_FILE = ".batch-stop"  # created in DIR when a Ray job stops: the actors (other processes) watch it


class ModelUnavailable(RuntimeError):
    """The model (or its pinned version) cannot serve this job; items that need it fail with this."""


class JobStopped(RuntimeError):
    """The job is stopping (a signal, or the server stayed unreachable): the item is left undone, not failed."""


class BackendError(RuntimeError):
    """The backend cannot start (e.g. --models-dir without TensorFlow, or a bad models folder)."""


class StopFlag:
    """Why a job stops early: `reason` (None while it runs) and the exit code it asks for.

    Args:
        marker: a file whose existence also means "stop" (Ray's actors, in other processes, watch the
            file the driver creates in the output folder); set() creates it.
    """

    def __init__(self, marker: Path | None = None):
        self.marker = marker
        self.reason: str | None = None
        self.exit_code = 0
        self._event = threading.Event()

    def set(self, reason: str, exit_code: int) -> None:
        if not self._event.is_set():
            self.reason, self.exit_code = reason, exit_code
            self._event.set()
        if self.marker is not None:
            try:
                self.marker.touch()
            except OSError:
                pass

    def is_set(self) -> bool:
        return self._event.is_set() or (self.marker is not None and self.marker.exists())


def unreachable_reason(target: str, error: GenserveError) -> str:
    return f"the server at {target} is unreachable: {error.details}"


class _JobClient(Client):
    """genserve's Client, counting requests and honouring the job's StopFlag."""

    def __init__(self, target: str, timeout: float, backend: "Backend", tls=None):
        super().__init__(target, timeout=timeout, tls=tls)
        self._backend = backend

    def _exchange(self, model, inputs, signature, *args):  # every Predict, whichever method made it
        backend = self._backend
        if backend.stop.is_set():
            raise JobStopped(backend.stop.reason or "the job is stopping")
        with backend.lock:
            backend.calls[(model, signature or "serving_default")] += 1
        try:
            return super()._exchange(model, inputs, signature, *args)
        except GenserveError as e:
            if e.code.name != "UNAVAILABLE":
                raise
            reason = unreachable_reason(self.target, e)
            backend.stop.set(reason, 1)
            raise JobStopped(reason) from None


class Backend:
    """One job's connection to one server; each model pinned to one version for the whole job.

    Args:
        target: "host:port".
        timeout: deadline per request in seconds (UNAVAILABLE retried inside it).
        versions: versions to pin instead of asking the server (model -> version; Ray's actors get the
            driver's).
        stop: the job's StopFlag (default: a new one).
        server: an in-process ModelServer to stop on close() (--models-dir).
        tls: a genserve.clients.TlsSettings for a TLS server (None: plaintext).
    """

    def __init__(self, target: str, timeout: float = 120.0, versions: Mapping[str, int] | None = None,
                 stop: StopFlag | None = None, server=None, tls=None):
        self.target, self.timeout, self.server = target, float(timeout), server
        self.stop = stop if stop is not None else StopFlag()
        self.lock = threading.Lock()
        self.calls: Counter = Counter()  # (model, signature) -> requests sent
        self._forced = dict(versions or {})
        self._pinned: dict[str, Any] = {}
        self._families: dict[tuple, Any] = {}
        self._pin_lock = threading.Lock()
        self.client = _JobClient(target, self.timeout, self, tls=tls)

    @property
    def requests(self) -> int:
        return sum(self.calls.values())

    def pinned(self, model: str):
        """The genserve.clients PinnedModel of `model` (the newest served version, or the forced one).

        Raises:
            ModelUnavailable: the server does not serve it (NOT_FOUND, ...).
            JobStopped: the server stayed unreachable (the StopFlag is set).
        """
        with self._pin_lock:
            if model not in self._pinned:
                try:
                    self._pinned[model] = self.client.pinned(model, version=self._forced.get(model),
                                                             timeout=min(self.timeout, PIN_TIMEOUT))
                except GenserveError as e:
                    if e.code.name == "UNAVAILABLE":
                        self.stop.set(unreachable_reason(self.target, e), 1)
                        raise JobStopped(self.stop.reason) from None
                    wanted = f" version {self._forced[model]}" if model in self._forced else ""
                    raise ModelUnavailable(f"model {model!r}{wanted} at {self.target}: "
                                           f"{e.code.name}: {e.details}") from None
            return self._pinned[model]

    def version(self, model: str) -> int:
        return self.pinned(model).version

    def versions(self) -> dict[str, int]:
        return {model: p.version for model, p in self._pinned.items()}

    def predict(self, model: str, signature: str, inputs, output_keys=None) -> dict:
        return self.pinned(model).predict(dict(inputs), signature=signature, output_filter=output_keys)

    def family(self, cls, model: str):
        """A family client (`cls(client, model, version)`) at the job's version, made once per model."""
        key = (cls, model)
        with self._pin_lock:
            known = self._families.get(key)
        if known is None:
            known = cls(self.client, model, version=self.version(model))
            with self._pin_lock:
                known = self._families.setdefault(key, known)
        return known

    def close(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.stop(grace=0.5)
            self.server = None


def start_local_server(models_dir, threads: tuple[int, int] = (0, 0)):
    """genserve's server over `models_dir` on 127.0.0.1 (a free port, no REST, versions read once).

    Raises:
        BackendError: TensorFlow is missing, or the folder cannot be served (one line).
    """
    try:
        from genserve.serving.server import ModelServer
    except ImportError as e:
        raise BackendError(f"--models-dir serves the models in this process and needs TensorFlow: "
                           f"pip install 'genserve[tf]' ({e})") from None
    kwargs = {}
    if any(threads):
        from genserve.serving.tf_session import session_config

        kwargs["session_config"] = session_config(*threads)
    server = ModelServer(models_dir, host="127.0.0.1", port=0, poll_seconds=0, **kwargs)
    try:
        server.start()
    except Exception as e:  # noqa: BLE001 - any start-up failure is one line for the user
        server.stop(grace=0)
        raise BackendError(f"--models-dir {models_dir}: cannot serve it: {e}") from None
    return server


def open_backend(target: str | None = None, models_dir=None, timeout: float = 120.0,
                 versions: Mapping[str, int] | None = None, stop: StopFlag | None = None,
                 threads: tuple[int, int] = (0, 0), tls=None) -> Backend:
    """A Backend for `target` (with `tls`, a TlsSettings, if given), or for genserve's server started
    in process over `models_dir` (plaintext loopback)."""
    if (target is None) == (models_dir is None):
        raise ValueError("give exactly one of target or models_dir")
    if target is not None:
        return Backend(target, timeout, versions, stop, tls=tls)
    server = start_local_server(models_dir, threads)
    return Backend(f"127.0.0.1:{server.port}", timeout, versions, stop, server=server)
