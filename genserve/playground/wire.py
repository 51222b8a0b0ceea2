"""What the playground sees of the wire: which families a server holds, and what each action cost.

No Gradio here (pure Python over the thin clients), so it is tested without a browser:

    python -c "from genserve.playground.wire import discover; print(discover('127.0.0.1:8500'))"

- `discover(target, names)` asks GetModelMetadata for each name (the `--models` names, else every
  family's default name from genserve.contract) and tells the family from the signatures it holds.
- `WireClient` is the thin clients' `Client` counting the requests it sends and the model versions
  that answered; each playground action opens one, so its report is that action's alone.
- `readable(error)` turns a client error into one line a person can act on (never a traceback).
- `stream(work)` runs a callback-style client loop (the text sampler, L-BFGS, the octave loop) in a
  thread and yields its progress, so a page can show each step while the same code runs as in the CLI.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from genserve import contract as C
from genserve.clients import Client, GenserveError

FAMILIES = ("text", "vae", "gan", "style", "dream")
DEFAULT_NAMES = {"text": C.TEXT.name, "vae": C.VAE.name, "gan": C.GAN.name, "style": C.STYLE.name,
                 "dream": C.DREAM.name}
# A family is known by the signatures only it has (checked in this order: `step` is text's and style's).
FAMILY_SIGNATURES = (
    ("text", (C.TEXT_INFO.name, C.TEXT_PRIME.name, C.TEXT_STEP.name)),
    ("style", (C.STYLE_TARGETS.name, C.STYLE_STEP.name)),
    ("dream", (C.DREAM_ASCEND.name,)),
    ("gan", (C.GAN_SAMPLE.name, C.GAN_GENERATE.name)),
    ("vae", (C.VAE_DECODE.name,)),
)
_HINTS = {
    "NOT_FOUND": "the model or version is not served (any more): pick another model, or restart the "
                 "playground after changing the server's models",
    "UNAVAILABLE": "the server did not answer: is it running, and is --target right?",
    "DEADLINE_EXCEEDED": "the server took longer than --timeout: ask for less, or raise --timeout",
    "INVALID_ARGUMENT": "the server refused the request's inputs",
    "RESOURCE_EXHAUSTED": "the server is busy or the request too large: try again, or ask for less",
    "UNAUTHENTICATED": "the server wants TLS credentials: see --tls / --ca-cert / --client-cert",
}


def family_of(signatures) -> str | None:
    """The family ("text", "vae", ...) whose signatures `signatures` (names) holds, or None."""
    names = set(signatures)
    for family, needed in FAMILY_SIGNATURES:
        if all(name in names for name in needed):
            return family
    return None


@dataclass
class Served:
    """The models of one server, by family, as the playground found them."""

    target: str
    models: dict[str, list[str]] = field(default_factory=dict)  # family -> model names, first = default
    versions: dict[str, int] = field(default_factory=dict)  # model name -> version at discovery
    skipped: dict[str, str] = field(default_factory=dict)  # model name -> why it has no tab

    def describe(self) -> str:
        found = ", ".join(f"{name} v{self.versions.get(name, '?')} ({family})"
                          for family, names in self.models.items() for name in names)
        lines = [f"{self.target}: {found or 'no model of a known family'}"]
        lines += [f"  {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


def discover(target: str, names: list[str] | None = None, timeout: float = 5.0,
             client_options: dict | None = None) -> Served:
    """Ask the server which of `names` it serves and of which family each is.

    Args:
        target: "host:port" of a TF-Serving-compatible gRPC server.
        names: model names to look for; default every family's default name (genserve.contract).
        timeout: deadline per GetModelMetadata call, seconds.
        client_options: extra keyword arguments for Client (TLS material).
    Returns:
        a Served; names the server does not hold (or of no known family) are in `.skipped`.
    Raises:
        GenserveError: the server is unreachable (UNAVAILABLE / DEADLINE_EXCEEDED), so no name
            could be asked.
    """
    explicit = names is not None
    names = list(dict.fromkeys(names)) if explicit else [DEFAULT_NAMES[f] for f in FAMILIES]
    served = Served(target)
    with Client(target, timeout=timeout, **(client_options or {})) as client:
        for name in names:
            try:
                pinned = client.pinned(name)  # GetModelMetadata: signatures and the version answering
            except GenserveError as e:
                if e.code.name in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "UNAUTHENTICATED"):
                    raise
                served.skipped[name] = f"{e.code.name}: {e.details}" if explicit else "not served"
                continue
            family = family_of(pinned.signatures)
            if family is None:
                served.skipped[name] = f"no known family's signatures ({', '.join(sorted(pinned.signatures))})"
                continue
            served.models.setdefault(family, []).append(name)
            served.versions[name] = pinned.version
    return served


class WireClient(Client):
    """A thin-client `Client` that counts the requests it sends and the versions that answered.

    Open one per action (`with WireClient(target) as client: ...; client.report()`): a channel on
    loopback costs about a millisecond, and the report then covers that action alone.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requests = 0
        self.answered: dict[str, set[int]] = {}  # model -> versions named in the replies
        self.started = time.perf_counter()

    def _exchange(self, *args, **kwargs):  # every Predict (predict, predict_reply, predict_response)
        self.requests += 1
        return super()._exchange(*args, **kwargs)

    def _replied(self, model, model_spec) -> None:
        if model_spec.HasField("version"):
            self.answered.setdefault(model, set()).add(int(model_spec.version.value))

    def metadata_response(self, model, *args, **kwargs):
        self.requests += 1
        response = super().metadata_response(model, *args, **kwargs)
        self._replied(model, response.model_spec)
        return response

    def report(self, note: str = "") -> str:
        """One line: requests sent, total latency, the model version(s) that answered."""
        elapsed_ms = (time.perf_counter() - self.started) * 1000
        versions = "; ".join(f"{model} version {', '.join(str(v) for v in sorted(vs))}"
                             for model, vs in sorted(self.answered.items())) or "no reply"
        text = (f"{self.requests} request{'s' if self.requests != 1 else ''} to {self.target} · "
                f"{elapsed_ms:,.1f} ms · {versions}")
        return f"{text} · {note}" if note else text


def readable(error: BaseException, target: str = "") -> str:
    """One line for a person: what failed and what to do. Client errors carry the server's words."""
    if isinstance(error, GenserveError):
        hint = _HINTS.get(error.code.name, "")
        where = f" from {target}" if target and target not in error.details else ""
        return f"{error.code.name}{where}: {error.details}" + (f" ({hint})" if hint else "")
    if isinstance(error, (ValueError, OSError)):
        return " ".join(str(error).split()) or type(error).__name__
    return f"unexpected {type(error).__name__}: {' '.join(str(error).split())}"


class Cancelled(Exception):
    """Raised inside a streamed job's thread when the page stopped listening."""


def stream(work: Callable[[Callable[[Any], None]], Any], every: float = 0.05) -> Iterator[tuple[str, Any]]:
    """Run `work(emit)` in a thread; yield ("progress", latest payload) as it emits (coalesced to one
    per `every` seconds, the last one always) and finally ("done", its result).

    Raises:
        whatever `work` raised. Closing the generator early makes the next `emit` raise Cancelled,
        so the thread stops at its next step instead of running on.
    """
    updates: queue.Queue = queue.Queue()
    stop = threading.Event()
    done = object()

    def emit(payload) -> None:
        if stop.is_set():
            raise Cancelled()
        updates.put(("progress", payload))

    def run() -> None:
        try:
            updates.put((done, work(emit)))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            updates.put((done, e))

    thread = threading.Thread(target=run, name="playground-job", daemon=True)
    thread.start()
    last_yield = 0.0
    try:
        while True:
            kind, payload = updates.get()
            if kind is done:
                if isinstance(payload, BaseException):
                    raise payload
                yield "done", payload
                return
            if updates.empty() or time.monotonic() - last_yield >= every:
                last_yield = time.monotonic()
                yield "progress", payload
    finally:
        stop.set()
