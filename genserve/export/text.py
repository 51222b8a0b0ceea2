"""Export the char-LSTM as a versioned SavedModel with the contract's five signatures.

    genserve export text --workdir work/text --models-dir models

Signatures (genserve/contract.py, TEXT): `next_char` (the book's model, default), `step` (one LSTM
step with (h, c) over the wire), `prime` (seed ids -> state after the seed), `info` (vocabulary,
maxlen, units), `generate` (seed ids, temperature, length, seed -> the generated ids: a whole
sampling round in one call, its PRNG a counter-based hash, see `counter_uniform`). Every signature runs the LSTM through its cell in a `tf.while_loop`/single call, never
through `keras.layers.LSTM`, so the graph holds no cuDNN-only kernel (CudnnRNN*) and loads on CPU and
GPU alike; tests assert that.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from genserve import contract
from genserve.training.text import BEST_FILE, CONFIG_FILE, VOCAB_FILE, load_checkpoint

DEFAULT_NAME = contract.TEXT.name

# Odd 32-bit constants: the golden ratio (Knuth) and MurmurHash3's finaliser constants, used to keep
# the seed, step and vocabulary inputs of the hash apart.
_GOLDEN, _STEP_SALT, _VOCAB_SALT = 0x9E3779B9, 0x85EBCA6B, 0xC2B2AE35


def _mix32(x):
    """A 32-bit integer hash with full avalanche: "lowbias32" from Chris Wellons, "Prospecting for
    Hash Functions" (2018, https://nullprogram.com/blog/2018/07/31/). x: uint32 tensor, any shape."""
    import tensorflow as tf

    x ^= tf.bitwise.right_shift(x, tf.constant(16, tf.uint32))
    x *= tf.constant(0x7FEB352D, tf.uint32)  # uint32 multiplication wraps modulo 2**32
    x ^= tf.bitwise.right_shift(x, tf.constant(15, tf.uint32))
    x *= tf.constant(0x846CA68B, tf.uint32)
    x ^= tf.bitwise.right_shift(x, tf.constant(16, tf.uint32))
    return x


def counter_uniform(seed, step, size):
    """Uniform noise in (0, 1) for `size` outcomes per stream, a pure function of (seed, step, index).

    A counter-based generator in the spirit of Salmon et al. 2011, "Parallel Random Numbers: As Easy
    as 1, 2, 3" (each draw is a hash of its coordinates), so every stream's draws depend only on its
    own seed: a stream gives the same text alone or batched with others, and no RNG state is kept.

    Args:
        seed: (B,) int64 tensor, one seed per stream.
        step: scalar int32 tensor, the position being sampled.
        size: python int or scalar int32 tensor, outcomes per stream (the vocabulary size).

    Returns:
        (B, size) float32 in [2**-25, 1 - 2**-25], so log(-log(u)) is always finite.
    """
    import tensorflow as tf

    words = tf.bitcast(seed, tf.uint32)  # (B, 2): the two 32-bit halves of each seed
    key = _mix32(words[:, 0] ^ _mix32(words[:, 1] ^ tf.constant(_GOLDEN, tf.uint32)))  # (B,)
    key = _mix32(key ^ _mix32(tf.cast(step, tf.uint32) ^ tf.constant(_STEP_SALT, tf.uint32)))  # (B,)
    index = tf.cast(tf.range(size), tf.uint32) ^ tf.constant(_VOCAB_SALT, tf.uint32)  # (V,)
    bits = _mix32(key[:, None] ^ _mix32(index)[None, :])  # (B, V)
    top24 = tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32)  # exact in f32
    return (top24 + 0.5) * (2.0 ** -24)


def build_module(model, cfg, vocab):
    """A `tf.Module` tracking the trained layers, with one tf.function per signature.

    Args:
        model: the trained Keras model from `genserve.training.text.build_model`.
        cfg: its TextConfig.
        vocab: its Vocabulary.

    Returns:
        (module, signatures): signatures maps contract signature names to concrete functions.
    """
    import tensorflow as tf

    from genserve.export.writer import input_signature

    encoder = model.get_layer("onehot" if cfg.encoding == "onehot" else "embedding")
    lstm = model.get_layer("lstm")
    dense = model.get_layer("logits")
    units = int(cfg.units)
    vocabulary = [ch.encode("utf-8") for ch in vocab.chars]
    maxlen = int(cfg.maxlen)

    class TextModule(tf.Module):
        def __init__(self):
            super().__init__(name="text")
            self.encoder, self.cell, self.dense = encoder, lstm.cell, dense
            self.vocabulary = tf.constant(vocabulary, dtype=tf.string)  # (V,)

        def _logits(self, h):  # h: (B, units)
            return tf.cast(self.dense(h), tf.float32)  # (B, V)

        def _head(self, h):  # h: (B, units)
            logits = self._logits(h)  # (B, V)
            return logits, tf.nn.softmax(logits, axis=-1)

        def _run(self, ids, h, c):
            """ids (B, T) from state (h, c) (B, units) -> final (h, c); the generic LSTM cell."""
            x = self.encoder(ids)  # (B, T, E)
            xs = tf.transpose(x, [1, 0, 2])  # (T, B, E)

            def body(t, h, c):
                _, (h, c) = self.cell(xs[t], [h, c], training=False)
                return t + 1, h, c

            _, h, c = tf.while_loop(lambda t, h, c: t < tf.shape(xs)[0], body, (tf.constant(0), h, c))
            return h, c

        def _zeros(self, ids):
            return tf.zeros(tf.stack([tf.shape(ids)[0], units]), tf.float32)  # (B, units)

        @tf.function(input_signature=input_signature(contract.TEXT_NEXT_CHAR))
        def next_char(self, ids):
            h, c = self._run(ids, self._zeros(ids), self._zeros(ids))
            logits, probabilities = self._head(h)
            return {"logits": logits, "probabilities": probabilities}

        @tf.function(input_signature=input_signature(contract.TEXT_STEP))
        def step(self, ids, h, c):
            x = self.encoder(ids[:, None])[:, 0]  # (B, E)
            out, (h, c) = self.cell(x, [h, c], training=False)
            logits, probabilities = self._head(out)
            return {"logits": logits, "probabilities": probabilities, "h": h, "c": c}

        @tf.function(input_signature=input_signature(contract.TEXT_PRIME))
        def prime(self, ids):
            h, c = self._run(ids, self._zeros(ids), self._zeros(ids))
            logits, probabilities = self._head(h)
            return {"logits": logits, "probabilities": probabilities, "h": h, "c": c}

        @tf.function(input_signature=input_signature(contract.TEXT_INFO))
        def info(self, ids):
            b = tf.shape(ids)[0]
            return {
                "vocabulary": tf.tile(self.vocabulary[None, :], tf.stack([b, 1])),  # (B, V)
                "maxlen": tf.fill(tf.reshape(b, [1]), tf.constant(maxlen, tf.int32)),  # (B,)
                "units": tf.fill(tf.reshape(b, [1]), tf.constant(units, tf.int32)),  # (B,)
            }

        @tf.function(input_signature=input_signature(contract.TEXT_GENERATE))
        def generate(self, ids, temperature, length, seed):
            b = tf.shape(ids)[0]
            checks = [tf.debugging.assert_equal(tf.shape(value)[0], b, message=(
                f"generate: {key} needs one entry per row of ids"))
                for key, value in (("temperature", temperature), ("length", length), ("seed", seed))]
            with tf.control_dependencies(checks):  # the checks run before anything that could fail
                pad = tf.ones(tf.reshape(1 - tf.minimum(b, 1), [1]), tf.int32)  # a 1 only when B == 0
                n = tf.reduce_max(tf.concat([length, pad], 0))  # (): the common length
            checks = [
                tf.debugging.assert_equal(length, n, message="generate: length must be the same in every row"),
                tf.debugging.assert_greater_equal(n, 1, message="generate: length must be >= 1"),
                tf.debugging.assert_less_equal(n, contract.TEXT_GENERATE_MAX_LENGTH, message=(
                    f"generate: length must be <= {contract.TEXT_GENERATE_MAX_LENGTH}")),
                tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(temperature) & (temperature >= 0.0)),
                                    ["generate: temperature must be finite and >= 0, got", temperature]),
            ]
            with tf.control_dependencies(checks):
                n, ids, temperature = tf.identity(n), tf.identity(ids), tf.identity(temperature)

            h, c = self._run(ids, self._zeros(ids), self._zeros(ids))  # (B, units): after the seed
            t = temperature[:, None]  # (B, 1)
            greedy = t <= 0.0  # T = 0: argmax, no noise
            vocab_size = tf.shape(self.vocabulary)[0]

            def body(i, h, c, logits, out):
                # Gumbel-max: argmax(l / T + g), g = -log(-log(u)) ~ Gumbel(0, 1), is a draw from
                # softmax(l / T) (Maddison, Tarlow & Minka 2014, "A* Sampling", sec. 2); the client's
                # sample_next does the same in numpy.
                gumbel = -tf.math.log(-tf.math.log(counter_uniform(seed, i, vocab_size)))  # (B, V)
                scaled = logits / tf.where(greedy, 1.0, t) + tf.where(greedy, 0.0, gumbel)  # (B, V)
                nxt = tf.argmax(scaled, axis=-1, output_type=tf.int32)  # (B,)
                x = self.encoder(nxt[:, None])[:, 0]  # (B, E)
                h_out, (h, c) = self.cell(x, [h, c], training=False)
                return i + 1, h, c, self._logits(h_out), out.write(i, nxt)

            out = tf.TensorArray(tf.int32, size=n, element_shape=tf.TensorShape([None]))
            _, _, _, _, out = tf.while_loop(lambda i, *_: i < n, body,
                                            (tf.constant(0), h, c, self._logits(h), out))
            return {"ids": tf.transpose(out.stack(), [1, 0])}  # (n, B) -> (B, n)

    module = TextModule()
    signatures = {
        contract.TEXT_NEXT_CHAR.name: module.next_char.get_concrete_function(),
        contract.TEXT_STEP.name: module.step.get_concrete_function(),
        contract.TEXT_PRIME.name: module.prime.get_concrete_function(),
        contract.TEXT_INFO.name: module.info.get_concrete_function(),
        contract.TEXT_GENERATE.name: module.generate.get_concrete_function(),
    }
    return module, signatures


def warmup_requests(cfg) -> list[tuple[str, dict[str, np.ndarray]]]:
    """One small request per signature, replayed by the server at load time."""
    zeros = np.zeros((1, cfg.units), np.float32)
    return [
        (contract.TEXT_INFO.name, {"ids": np.zeros((1,), np.int32)}),
        (contract.TEXT_PRIME.name, {"ids": np.zeros((1, cfg.maxlen), np.int32)}),
        (contract.TEXT_STEP.name, {"ids": np.zeros((1,), np.int32), "h": zeros, "c": zeros}),
        (contract.TEXT_NEXT_CHAR.name, {"ids": np.zeros((1, cfg.maxlen), np.int32)}),
        (contract.TEXT_GENERATE.name, {"ids": np.zeros((1, 2), np.int32),  # small: 2 + 2 LSTM steps
                                       "temperature": np.ones((1,), np.float32),
                                       "length": np.full((1,), 2, np.int32),
                                       "seed": np.zeros((1,), np.int64)}),
    ]


def export_text(workdir: str | Path, models_dir: str | Path, name: str = DEFAULT_NAME,
                version: int | None = None) -> Path:
    """Export the best checkpoint of `workdir` to `<models_dir>/<name>/<version>/`.

    Args:
        workdir: a training workdir (best.keras, config.json, vocabulary.json).
        models_dir: the serving root (TF Serving layout).
        name: the served model name.
        version: explicit version; default the next free one.

    Returns:
        The version directory written.

    Raises:
        FileNotFoundError: when the workdir holds no checkpoint.
    """
    from genserve.export.writer import save_version

    workdir = Path(workdir)
    model, cfg, vocab = load_checkpoint(workdir, BEST_FILE)
    module, signatures = build_module(model, cfg, vocab)
    assets = {
        CONFIG_FILE: cfg.to_json().encode("utf-8"),
        VOCAB_FILE: vocab.to_json().encode("utf-8"),
    }
    history = workdir / "history.csv"
    if history.exists():
        assets["history.csv"] = history.read_bytes()
    return save_version(module, models_dir, name, signatures, default=contract.TEXT_NEXT_CHAR.name,
                        version=version, warmup=warmup_requests(cfg), assets=assets)


def cudnn_ops(export_dir: str | Path) -> list[str]:
    """Names of cuDNN-only ops (CudnnRNN*) anywhere in a SavedModel's graph, functions included."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((Path(export_dir) / "saved_model.pb").read_bytes())
    found = []
    for meta in sm.meta_graphs:
        nodes = list(meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            nodes.extend(fn.node_def)
        found.extend(n.op for n in nodes if n.op.startswith("Cudnn"))
    return sorted(set(found))


def describe_export(export_dir: str | Path) -> str:
    """config.json of an export (assets.extra) as a one-line summary."""
    cfg = json.loads((Path(export_dir) / "assets.extra" / CONFIG_FILE).read_text())
    return f"maxlen {cfg['maxlen']}, units {cfg['units']}, encoding {cfg['encoding']}"
