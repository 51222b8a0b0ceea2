"""The wire contract: model names, signature names, tensor keys, dtypes and shapes.

This module imports nothing but the standard library. `genserve.export` builds its signatures from
it, `genserve.clients` builds its requests from it, and `tests/` checks every exported SavedModel's
signatures against it, so the three cannot drift apart.

Conventions (see README.md, "The wire contract"):
- every tensor has a leading batch dimension (`None` below), because TF Serving's batcher concatenates
  requests along dim 0;
- dtypes are numpy dtype names (`"float32"`, `"int32"`, ...) plus `"string"` for bytes;
- `None` in a shape means "any size"; the size a trained model fixes (vocabulary, LSTM units, latent
  size) is read from the server's metadata, never from a side file.

    python -c "import genserve.contract as c; print(c.describe(c.TEXT))"
"""

from __future__ import annotations

from dataclasses import dataclass

Shape = tuple["int | None", ...]


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of a signature."""

    key: str
    dtype: str  # numpy dtype name, or "string"
    shape: tuple  # None = any size; element 0 is the batch dimension


@dataclass(frozen=True)
class SignatureSpec:
    """One serving signature: named inputs to named outputs."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    doc: str = ""

    def input(self, key: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.key == key:
                return spec
        raise KeyError(f"signature {self.name!r} has no input {key!r}")

    def output(self, key: str) -> TensorSpec:
        for spec in self.outputs:
            if spec.key == key:
                return spec
        raise KeyError(f"signature {self.name!r} has no output {key!r}")


@dataclass(frozen=True)
class ModelContract:
    """A model family: its default served name and its signatures (the first is the default)."""

    name: str
    signatures: tuple[SignatureSpec, ...]

    @property
    def default(self) -> SignatureSpec:
        return self.signatures[0]

    def signature(self, name: str) -> SignatureSpec:
        for sig in self.signatures:
            if sig.name == name:
                return sig
        known = ", ".join(s.name for s in self.signatures)
        raise KeyError(f"model {self.name!r} has no signature {name!r} (known: {known})")


# TF Serving's name for the signature used when a request names none.
DEFAULT_SIGNATURE_KEY = "serving_default"

# ---------------------------------------------------------------------------------------------------
# Text: character-level LSTM (Deep Learning with Python, 8.1).
# ---------------------------------------------------------------------------------------------------
TEXT_NEXT_CHAR = SignatureSpec(
    name="next_char",
    inputs=(TensorSpec("ids", "int32", (None, None)),),  # (B, T): the last maxlen character ids
    outputs=(
        TensorSpec("logits", "float32", (None, None)),  # (B, V)
        TensorSpec("probabilities", "float32", (None, None)),  # (B, V)
    ),
    doc="The book's model: a window of character ids -> next-character distribution.",
)
TEXT_STEP = SignatureSpec(
    name="step",
    inputs=(
        TensorSpec("ids", "int32", (None,)),  # (B,): the character just emitted, 0 <= id < V
        TensorSpec("h", "float32", (None, None)),  # (B, layers * units); 1 layer: (B, units)
        TensorSpec("c", "float32", (None, None)),  # (B, layers * units), layer 0's units first
    ),
    outputs=(
        TensorSpec("logits", "float32", (None, None)),  # (B, V)
        TensorSpec("probabilities", "float32", (None, None)),
        TensorSpec("h", "float32", (None, None)),
        TensorSpec("c", "float32", (None, None)),
    ),
    doc="One LSTM step carrying the state (h, c) over the wire: O(1) per generated character.",
)
# Text state layout: a model of L stacked LSTMs of `units` each (both from `info`) carries h and c as
# (B, L * units), layer l in columns [l * units, (l + 1) * units). L = 1 is the book's (B, units).
# Clients treat the state as opaque (it comes from `prime` and goes back into `step`). Ids outside
# [0, V) answer INVALID_ARGUMENT in next_char, step, prime and generate.
TEXT_PRIME = SignatureSpec(
    name="prime",
    inputs=(TensorSpec("ids", "int32", (None, None)),),  # (B, T): seed text ids
    outputs=(
        TensorSpec("logits", "float32", (None, None)),  # distribution after the last seed char
        TensorSpec("probabilities", "float32", (None, None)),
        TensorSpec("h", "float32", (None, None)),
        TensorSpec("c", "float32", (None, None)),
    ),
    doc="Run a seed text through the LSTM in one call; returns the state to continue from.",
)
TEXT_INFO = SignatureSpec(
    name="info",
    inputs=(TensorSpec("ids", "int32", (None,)),),  # (B,): any values; only the batch size matters
    outputs=(
        TensorSpec("vocabulary", "string", (None, None)),  # (B, V): one UTF-8 character per id
        TensorSpec("maxlen", "int32", (None,)),
        TensorSpec("units", "int32", (None,)),  # LSTM units per layer
        TensorSpec("layers", "int32", (None,)),  # stacked LSTM layers; exports before it: 1
    ),
    doc="What a client must know about the model (vocabulary, window length, units, layers; "
        "state width = layers * units).",
)
TEXT_GENERATE = SignatureSpec(
    name="generate",
    inputs=(
        TensorSpec("ids", "int32", (None, None)),  # (B, T): seed text ids
        TensorSpec("temperature", "float32", (None,)),  # (B,): >= 0; 0 = greedy (argmax)
        TensorSpec("length", "int32", (None,)),  # (B,): characters to generate; equal in every row
        TensorSpec("seed", "int64", (None,)),  # (B,): PRNG seed of each stream
    ),
    outputs=(TensorSpec("ids", "int32", (None, None)),),  # (B, length): the generated ids
    doc="Server-side generation: prime on the seed, then sample `length` characters per stream in "
        "one call (each stream's draws depend only on its own seed).",
)
TEXT_GENERATE_MAX_LENGTH = 20_000  # longest `length` the export accepts (bounds one call's work)
TEXT = ModelContract("text", (TEXT_NEXT_CHAR, TEXT_STEP, TEXT_PRIME, TEXT_INFO, TEXT_GENERATE))

# ---------------------------------------------------------------------------------------------------
# VAE: convolutional variational autoencoder on MNIST (8.4).
# ---------------------------------------------------------------------------------------------------
VAE_DECODE = SignatureSpec(
    name="decode",
    inputs=(TensorSpec("z", "float32", (None, None)),),  # (B, latent)
    outputs=(TensorSpec("images", "float32", (None, 28, 28, 1)),),  # values in [0, 1]
    doc="Latent points -> images. A whole latent grid is one request.",
)
VAE_ENCODE = SignatureSpec(
    name="encode",
    inputs=(TensorSpec("images", "float32", (None, 28, 28, 1)),),  # values in [0, 1]
    outputs=(
        TensorSpec("z_mean", "float32", (None, None)),  # (B, latent)
        TensorSpec("z_log_var", "float32", (None, None)),
    ),
    doc="Images -> parameters of q(z|x).",
)
VAE = ModelContract("vae", (VAE_DECODE, VAE_ENCODE))

# ---------------------------------------------------------------------------------------------------
# GAN: DCGAN on MNIST (8.5). The latent size is fixed by the export (`z`'s static last dimension in
# `generate`, read from GetModelMetadata). `sample` takes ONE seed per image, int64 (B,): row i is
# generate(tf.random.stateless_normal([latent], seed=[seed[i], 0])), so a seed always gives the same
# digit on every server, load and batch, and TF Serving's batcher may concatenate requests along
# dim 0 (a seeds-plus-count design would need a scalar count, which breaks it). A grid of n x n
# digits is one `sample` request with the seeds s, s + 1, ..., s + n*n - 1.
# ---------------------------------------------------------------------------------------------------
GAN_GENERATE = SignatureSpec(
    name="generate",
    inputs=(TensorSpec("z", "float32", (None, None)),),  # (B, latent)
    outputs=(TensorSpec("images", "float32", (None, 28, 28, 1)),),  # values in [0, 1]
    doc="Latent vectors -> generated digits.",
)
GAN_SAMPLE = SignatureSpec(
    name="sample",
    inputs=(TensorSpec("seed", "int64", (None,)),),  # (B,): one image per seed
    outputs=(
        TensorSpec("images", "float32", (None, 28, 28, 1)),  # values in [0, 1]
        TensorSpec("z", "float32", (None, None)),  # (B, latent): the draw, for interpolation
    ),
    doc="Seeds -> digits, the normal draw made in the graph (stateless: same seed, same digit).",
)
GAN = ModelContract("gan", (GAN_GENERATE, GAN_SAMPLE))

# ---------------------------------------------------------------------------------------------------
# Style: neural style transfer loss served as a gradient step (8.3).
# ---------------------------------------------------------------------------------------------------
STYLE_GRAM_PREFIX = "gram_"  # one target/input per style layer: gram_<layer name>, (B, C, C)
STYLE_CONTENT_FEATURES = "content_features"  # (B, h, w, C) of the content layer
STYLE_TARGETS = SignatureSpec(
    name="targets",
    inputs=(
        TensorSpec("content_image", "float32", (None, None, None, 3)),  # RGB 0..255
        TensorSpec("style_image", "float32", (None, None, None, 3)),  # RGB 0..255
    ),
    outputs=(TensorSpec(STYLE_CONTENT_FEATURES, "float32", (None, None, None, None)),),
    doc="Content features and one Gram matrix per style layer (outputs gram_<layer>), once per job.",
)
STYLE_STEP = SignatureSpec(
    name="step",
    inputs=(
        TensorSpec("image", "float32", (None, None, None, 3)),  # the combination image, RGB 0..255
        TensorSpec(STYLE_CONTENT_FEATURES, "float32", (None, None, None, None)),
    ),
    outputs=(
        TensorSpec("loss", "float32", (None,)),
        TensorSpec("content_loss", "float32", (None,)),
        TensorSpec("style_loss", "float32", (None,)),
        TensorSpec("tv_loss", "float32", (None,)),
        TensorSpec("gradient", "float32", (None, None, None, 3)),  # d loss / d image
    ),
    doc="Loss, its parts and the gradient for a combination image; inputs also take gram_<layer>.",
)
STYLE = ModelContract("style", (STYLE_STEP, STYLE_TARGETS))
# The style layers are not fixed by the contract (they depend on the export's config): a client reads
# them from GetModelMetadata as the `gram_<layer>` outputs of `targets` (and inputs of `step`), each
# float32 (B, C_l, C_l). The step's loss parts are already weighted: loss = content + style + tv.


def style_gram_key(layer: str) -> str:
    """The tensor key of a style layer's Gram matrix: gram_<layer>."""
    return STYLE_GRAM_PREFIX + layer


def style_layers_from_keys(keys) -> tuple[str, ...]:
    """The style layer names among tensor keys (e.g. the `targets` outputs in model metadata), sorted."""
    return tuple(sorted(k[len(STYLE_GRAM_PREFIX):] for k in keys if k.startswith(STYLE_GRAM_PREFIX)))


# ---------------------------------------------------------------------------------------------------
# Dream: DeepDream, normalised-gradient ascent on a convnet's activations (8.2).
# ---------------------------------------------------------------------------------------------------
DREAM_ASCEND = SignatureSpec(
    name="ascend",
    inputs=(
        TensorSpec("image", "float32", (None, None, None, 3)),  # (B, H, W, 3) RGB 0..255, any H, W
        TensorSpec("step_size", "float32", (None,)),  # (B,): pixels move DREAM_STEP_SCALE * step_size
        TensorSpec("iterations", "int32", (None,)),  # (B,): ascent steps of each row, >= 0
        TensorSpec("max_loss", "float32", (None,)),  # (B,): stop a row once its loss > max_loss; inf = never
    ),
    outputs=(
        TensorSpec("image", "float32", (None, None, None, 3)),  # (B, H, W, 3), not clipped
        TensorSpec("losses", "float32", (None, None)),  # (B, max iterations): loss before each step; NaN = not run
        TensorSpec("iterations_run", "int32", (None,)),  # (B,): steps actually applied
    ),
    doc="A whole octave in one call: `iterations` normalised-gradient ascent steps (the loop runs in "
        "the graph), each row stopping early once its loss exceeds max_loss, as in the book.",
)
DREAM_GRADIENT = SignatureSpec(
    name="gradient",
    inputs=(TensorSpec("image", "float32", (None, None, None, 3)),),  # (B, H, W, 3) RGB 0..255
    outputs=(
        TensorSpec("loss", "float32", (None,)),  # (B,)
        TensorSpec("gradient", "float32", (None, None, None, 3)),  # (B, H, W, 3): d loss / d image, raw
    ),
    doc="One loss and its raw gradient, for clients that drive the loop (and tiles) themselves.",
)
DREAM = ModelContract("dream", (DREAM_ASCEND, DREAM_GRADIENT))
# A step of size s moves the pixels (RGB 0..255) by DREAM_STEP_SCALE * s * g / mean|g|: the book's
# step 0.01 on its [-1, 1] image is 1.275 grey levels, whatever the backbone's own input scale.
DREAM_STEP_SCALE = 127.5
DREAM_MAX_ITERATIONS = 10_000  # most `iterations` one ascend request may ask for (bounds one call's work)


# ---------------------------------------------------------------------------------------------------
# Toy: y = w * x + b, the example model of the serving tests and the demo (genserve/export/toy.py).
# Not one of the book's models, so it is not in MODELS.
# ---------------------------------------------------------------------------------------------------
TOY_AFFINE = SignatureSpec(
    name="affine",
    inputs=(TensorSpec("x", "float32", (None, 1)),),  # (B, 1)
    outputs=(
        TensorSpec("y", "float32", (None, 1)),  # w * x + b
        TensorSpec("wx", "float32", (None, 1)),  # w * x
    ),
    doc="y = w * x + b (w = 2 by default; b tells exported versions apart).",
)
TOY_SCALE = SignatureSpec(
    name="scale",
    inputs=(
        TensorSpec("x", "float32", (None, 1)),  # (B, 1)
        TensorSpec("factor", "int32", (None,)),  # (B,)
    ),
    outputs=(TensorSpec("y", "float32", (None, 1)),),  # factor * w * x
    doc="y = factor * w * x: two inputs of different dtypes.",
)
TOY = ModelContract("toy", (TOY_AFFINE, TOY_SCALE))

MODELS: dict[str, ModelContract] = {m.name: m for m in (TEXT, VAE, STYLE, DREAM, GAN)}


def describe(model: ModelContract) -> str:
    """A human-readable listing of a model's signatures."""
    lines = [f"model {model.name}"]
    for i, sig in enumerate(model.signatures):
        default = " (default)" if i == 0 else ""
        lines.append(f"  {sig.name}{default}: {sig.doc}")
        for direction, specs in (("in ", sig.inputs), ("out", sig.outputs)):
            for spec in specs:
                lines.append(f"    {direction} {spec.key}: {spec.dtype}{list(spec.shape)}")
    return "\n".join(lines)
