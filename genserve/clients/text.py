"""Text generation client: a pure temperature sampler over an injected step function, and its gRPC wrapper.

    genserve generate --target 127.0.0.1:8500 --seed-text "to be, or not to be" --length 400

The sampler never talks to a server: `sample(step_fn, state, first_logits, n, temperatures, rng)`
advances every stream (all temperatures x samples) together, one `step_fn` call per character, so
over gRPC a 400-character round at four temperatures is 1 `prime` + 399 `step` requests instead of
the book's 1,600 `model.predict` calls; with `server_side=True` the export's `generate` signature
does the whole round in one request. `TextModel` is that step function over
`genserve.clients.Client`; it learns the vocabulary, maxlen, units and layers from the model's
own `info` signature, and pins the version that answered it for every later request, so a new
version exported mid-session never mixes two models (if the pinned version disappears, the session
ends with one NOT_FOUND line naming it). The state is opaque: (h, c) of shape (B, layers * units)
from `prime`, passed back into `step`, so any depth works unchanged. No TensorFlow import here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from genserve import contract
from genserve.clients.pinned import PinnedJob

State = tuple  # opaque to the sampler: (h, c) for the LSTM, each (B, layers * units)
StepFn = Callable[[np.ndarray, State], tuple[np.ndarray, State]]  # ids (B,), state -> logits (B, V), state

BOOK_TEMPERATURES = (0.2, 0.5, 1.0, 1.2)  # Deep Learning with Python, 8.1
_STATE_OUTPUTS = ("logits", "h", "c")  # probabilities are not needed by the sampler: smaller replies


def check_temperatures(temperatures: Sequence[float]) -> np.ndarray:
    """Temperatures as a float64 array (S,).

    Raises:
        ValueError: empty, negative or non-finite temperatures.
    """
    t = np.asarray(list(temperatures), dtype=np.float64).reshape(-1)
    if t.size == 0:
        raise ValueError("give at least one temperature")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError(f"temperatures must be finite and >= 0, got {t.tolist()}")
    return t


def reweight(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """The book's re-weighting p_i^(1/T) / sum_j p_j^(1/T), computed in log space; T = 0 -> one-hot argmax.

    Equal to softmax(log p / T) (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network", eq. 1).
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if temperature == 0:
        out = np.zeros_like(p)
        np.put_along_axis(out, np.argmax(p, axis=-1)[..., None], 1.0, axis=-1)
        return out
    with np.errstate(divide="ignore"):
        z = np.log(p) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def sample_next(logits: np.ndarray, temperatures: np.ndarray, rng: np.random.Generator,
                top_k: int | None = None) -> np.ndarray:
    """One draw per row from softmax(logits / T) with the Gumbel-max trick; T = 0 rows take the argmax.

    Gumbel-max: argmax_i(l_i / T + g_i), g_i ~ Gumbel(0, 1), is a sample of softmax(l / T)
    (Maddison, Tarlow & Minka 2014, "A* Sampling", sec. 2).

    Args:
        logits: (B, V) unnormalised log-probabilities.
        temperatures: (B,) non-negative.
        rng: the generator (same seed -> same draws).
        top_k: keep only the k largest logits of each row before sampling.

    Returns:
        (B,) int32 ids.
    """
    logits = np.asarray(logits, dtype=np.float64)  # (B, V)
    b, v = logits.shape
    if top_k is not None and 0 < top_k < v:
        kth = np.partition(logits, v - top_k, axis=-1)[:, v - top_k][:, None]  # (B, 1)
        logits = np.where(logits >= kth, logits, -np.inf)
    t = np.asarray(temperatures, dtype=np.float64).reshape(b, 1)  # (B, 1)
    gumbel = rng.gumbel(size=(b, v))  # (B, V); drawn for every row so the stream is reproducible
    greedy = t[:, 0] == 0
    scaled = logits / np.where(greedy[:, None], 1.0, t) + np.where(greedy[:, None], 0.0, gumbel)
    return np.argmax(scaled, axis=-1).astype(np.int32)


def sample(step_fn: StepFn, state: State, first_logits: np.ndarray, n: int,
           temperatures: np.ndarray, rng: np.random.Generator, top_k: int | None = None,
           on_step: Callable[[int, np.ndarray], None] | None = None) -> np.ndarray:
    """Generate `n` ids for every stream together: one `step_fn` call per character for all streams.

    Args:
        step_fn: ids (B,) int32, state -> (logits (B, V), new state).
        state: the state after the seed (from `prime`).
        first_logits: (B, V) logits for the first generated character (from `prime`).
        n: characters to generate.
        temperatures: (B,) one temperature per stream.
        rng: a seeded numpy Generator.
        top_k: optional top-k filter.
        on_step: called as on_step(i, ids (B,)) after each character (streaming output).

    Returns:
        (B, n) int32 ids.
    """
    logits = np.asarray(first_logits)
    out = np.zeros((logits.shape[0], n), np.int32)  # (B, n)
    for i in range(n):
        ids = sample_next(logits, temperatures, rng, top_k)  # (B,)
        out[:, i] = ids
        if on_step is not None:
            on_step(i, ids)
        if i + 1 < n:  # the last character needs no further step
            logits, state = step_fn(ids, state)
    return out


class UnknownCharactersError(ValueError):
    """The seed text has characters the model's vocabulary lacks."""

    def __init__(self, chars: list[str]):
        self.chars = chars
        listed = " ".join(repr(ch) for ch in chars)
        super().__init__(f"seed text has characters not in the model's vocabulary: {listed} "
                         "(use --replace-unknown CHAR, or change the seed)")


@dataclass(frozen=True)
class TextInfo:
    vocabulary: tuple[str, ...]
    maxlen: int
    units: int  # per layer
    layers: int = 1  # exports made before `info` had a `layers` output are single-layer

    @property
    def state_size(self) -> int:
        """Width of h and c: layers * units."""
        return self.layers * self.units


def check_length(length: int) -> int:
    """A generation length the server-side cap also allows: 1 ... contract.TEXT_GENERATE_MAX_LENGTH.

    Raises:
        ValueError: outside that range.
    """
    if not 1 <= length <= contract.TEXT_GENERATE_MAX_LENGTH:
        raise ValueError(f"length must be from 1 to {contract.TEXT_GENERATE_MAX_LENGTH:,} characters, "
                         f"got {length:,}")
    return length


class TextModel(PinnedJob):
    """The text model behind a server: `info` once, then `prime`, `step`, `next_char` over gRPC.

    Args:
        client: a connected `genserve.clients.Client`.
        model: the served model name.
        version: a fixed version; default the latest, pinned by the reply to `info` (the first
            request) for every later request of this TextModel (genserve.clients.pinned).
    """

    def __init__(self, client, model: str = contract.TEXT.name, version: int | None = None):
        super().__init__(client, model, version)
        self._info: TextInfo | None = None

    def _predict(self, signature: str, inputs: dict[str, np.ndarray],
                 output_filter: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        self.info  # noqa: B018 - the first request reads and pins the version
        return self.pinned().predict(inputs, signature=signature, output_filter=output_filter)

    @property
    def info(self) -> TextInfo:
        """Vocabulary, maxlen, units, layers from the `info` signature (one request, then cached);
        its reply pins the version when none was given."""
        if self._info is None:
            out = self.pinned().predict({"ids": np.zeros((1,), np.int32)}, signature=contract.TEXT_INFO.name)
            vocab = tuple(v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in out["vocabulary"][0])
            layers = int(out["layers"][0]) if "layers" in out else 1
            self._info = TextInfo(vocab, int(out["maxlen"][0]), int(out["units"][0]), layers)
        return self._info

    def encode(self, text: str, replace_unknown: str | None = None) -> np.ndarray:
        """Text -> ids (T,) int32 in the model's vocabulary.

        Raises:
            ValueError: empty text; UnknownCharactersError listing characters outside the vocabulary.
        """
        if not text:
            raise ValueError("the seed text is empty")
        lookup = {ch: i for i, ch in enumerate(self.info.vocabulary)}
        unknown = list(dict.fromkeys(ch for ch in text if ch not in lookup))
        if unknown:
            if replace_unknown is None:
                raise UnknownCharactersError(unknown)
            if replace_unknown not in lookup:
                raise ValueError(f"replacement {replace_unknown!r} is not in the vocabulary either")
            text = "".join(ch if ch in lookup else replace_unknown for ch in text)
        return np.array([lookup[ch] for ch in text], np.int32)

    def decode(self, ids) -> str:
        vocab = self.info.vocabulary
        return "".join(vocab[int(i)] for i in np.asarray(ids).reshape(-1))

    def prime(self, ids: np.ndarray) -> tuple[np.ndarray, State]:
        """ids (B, T) -> (logits (B, V), (h, c))."""
        out = self._predict(contract.TEXT_PRIME.name, {"ids": np.asarray(ids, np.int32)}, _STATE_OUTPUTS)
        return out["logits"], (out["h"], out["c"])

    def step(self, ids: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """ids (B,), (h, c) -> (logits (B, V), (h, c)); the sampler's step_fn."""
        h, c = state
        out = self._predict(contract.TEXT_STEP.name, {"ids": np.asarray(ids, np.int32), "h": h, "c": c},
                            _STATE_OUTPUTS)
        return out["logits"], (out["h"], out["c"])

    def generate(self, ids: np.ndarray, temperatures: np.ndarray, length: int,
                 seeds: np.ndarray) -> np.ndarray:
        """The server-side `generate` signature: ids (B, T), temperatures (B,), length, seeds (B,)
        -> generated ids (B, length) int32, in one request."""
        b = np.asarray(ids).shape[0]
        out = self._predict(contract.TEXT_GENERATE.name, {
            "ids": np.asarray(ids, np.int32),
            "temperature": np.asarray(temperatures, np.float32).reshape(b),
            "length": np.full((b,), length, np.int32),
            "seed": np.asarray(seeds, np.int64).reshape(b),
        })
        return out["ids"]

    def next_char(self, ids: np.ndarray) -> np.ndarray:
        """The book's window signature: ids (B, maxlen) -> logits (B, V)."""
        return self._predict(contract.TEXT_NEXT_CHAR.name, {"ids": np.asarray(ids, np.int32)},
                             ("logits",))["logits"]


def generate(model: TextModel, seed_text: str, length: int = 400,
             temperatures: Sequence[float] = BOOK_TEMPERATURES, samples: int = 1, seed: int | None = None,
             top_k: int | None = None, replace_unknown: str | None = None,
             on_step: Callable[[int, np.ndarray], None] | None = None,
             server_side: bool = False) -> dict:
    """Continue `seed_text` at every temperature (x `samples`), all streams batched together.

    The seed is cut to its last `maxlen` characters (the window the model was trained on), primed in
    one request, then `length - 1` batched `step` requests follow. With `server_side`, one
    `generate` request does it all on the server (its own PRNG: the text differs from the
    client-side sampler's for the same seed, except at temperature 0).

    Args:
        model: a TextModel.
        seed_text: the seed (characters must be in the vocabulary unless replace_unknown is given).
        length: characters to generate per stream.
        temperatures: one or more temperatures >= 0 (0 = greedy).
        samples: streams per temperature.
        seed: numpy Generator seed (same seed -> same text).
        top_k: optional top-k filter.
        replace_unknown: a vocabulary character to put in place of unknown seed characters.
        on_step: streaming callback on_step(i, ids (B,)); stream j is temperature j // samples.
        server_side: one `generate` request instead of prime + steps (no top_k, no on_step).
            Either way `length` is capped at genserve.contract.TEXT_GENERATE_MAX_LENGTH (20,000).

    Returns:
        {"seed": seed text used, "length": n, "requests": RPCs made,
         "samples": [{"temperature": T, "sample": k, "text": continuation}, ...]}.

    Raises:
        ValueError: bad temperatures, length, samples, top_k or seed text.
        genserve.clients.GenserveError: the server refused (unknown model, ...).
    """
    temps = check_temperatures(temperatures)
    check_length(length)
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if server_side and (top_k is not None or on_step is not None):
        raise ValueError("server-side generation takes no top_k and streams nothing (on_step)")
    before = model.requests
    ids = model.encode(seed_text, replace_unknown)[-model.info.maxlen:]  # (T,)
    stream_temps = np.repeat(temps, samples)  # (B,)
    b = stream_temps.size
    rng = np.random.default_rng(seed)
    if server_side:  # one PRNG seed per stream, drawn from `seed`: same seed -> same text
        seeds = rng.integers(0, np.iinfo(np.int64).max, size=b, dtype=np.int64)  # (B,)
        out = model.generate(np.tile(ids[None, :], (b, 1)), stream_temps, length, seeds)  # (B, n)
    else:
        logits, state = model.prime(np.tile(ids[None, :], (b, 1)))  # (B, V), (h, c)
        out = sample(model.step, state, logits, length, stream_temps, rng, top_k, on_step)
    rows = [{"temperature": float(stream_temps[j]), "sample": j % samples, "text": model.decode(out[j])}
            for j in range(b)]
    return {"seed": model.decode(ids), "length": length, "requests": model.requests - before, "samples": rows}
