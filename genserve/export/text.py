"""Export the char-LSTM as a versioned SavedModel with the contract's five signatures.

    genserve export text --workdir work/text --models-dir models

Signatures (genserve/contract.py, TEXT): `next_char` (the book's model, default), `step` (one LSTM
step with (h, c) over the wire), `prime` (seed ids -> state after the seed), `info` (vocabulary,
maxlen, units, layers), `generate` (seed ids, temperature, length, seed -> the generated ids: a whole
sampling round in one call, its PRNG a counter-based hash, see `counter_uniform`). Every signature runs the LSTM through its cell in a `tf.while_loop`/single call, never
through `keras.layers.LSTM`, so the graph holds no cuDNN-only kernel (CudnnRNN*) and loads on CPU and
GPU alike; tests assert that. Any depth exports: with L stacked LSTMs the state tensors h and c are
(B, L * units), layer 0's units first (a 1-layer export keeps the book's (B, units)). Every signature
that takes character ids checks them in the graph (0 <= id < V), so a bad id is INVALID_ARGUMENT on
any server, TF Serving included.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genserve import contract
from genserve.training.text import BEST_FILE, CONFIG_FILE, VOCAB_FILE, load_checkpoint, lstm_name

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

    from genserve.export.writer import concrete_signatures, input_signature

    encoder = model.get_layer("onehot" if cfg.encoding == "onehot" else "embedding")
    cells = [model.get_layer(lstm_name(i)).cell for i in range(cfg.layers)]
    dense = model.get_layer("logits")
    units, layers = int(cfg.units), int(cfg.layers)
    vocab_size = len(vocab.chars)
    vocabulary = [ch.encode("utf-8") for ch in vocab.chars]
    maxlen = int(cfg.maxlen)

    class TextModule(tf.Module):
        def __init__(self):
            super().__init__(name="text")
            self.encoder, self.cells, self.dense = encoder, list(cells), dense
            self.vocabulary = tf.constant(vocabulary, dtype=tf.string)  # (V,)

        def _checked(self, ids, signature):
            """ids (any shape) passed through only if every id is in [0, V): INVALID_ARGUMENT otherwise."""
            checks = [
                tf.debugging.assert_non_negative(ids, message=f"{signature}: character ids must be >= 0"),
                tf.debugging.assert_less(ids, tf.constant(vocab_size, tf.int32), message=(
                    f"{signature}: character ids must be < the vocabulary size {vocab_size}")),
            ]
            with tf.control_dependencies(checks):
                return tf.identity(ids)

        def _cell_step(self, x, h, c):
            """x (B, E), h/c (B, layers*units) -> top output (B, units), h, c: one step through the stack."""
            hs, cs = tf.split(h, layers, axis=1), tf.split(c, layers, axis=1)  # layers x (B, units)
            new_h, new_c = [], []
            for cell, h_l, c_l in zip(self.cells, hs, cs):
                x, (h_l, c_l) = cell(x, [h_l, c_l], training=False)
                new_h.append(h_l)
                new_c.append(c_l)
            if layers == 1:
                return x, new_h[0], new_c[0]
            return x, tf.concat(new_h, axis=1), tf.concat(new_c, axis=1)

        def _logits(self, h):  # h: (B, units)
            return tf.cast(self.dense(h), tf.float32)  # (B, V)

        def _head(self, h):  # h: (B, units)
            logits = self._logits(h)  # (B, V)
            return logits, tf.nn.softmax(logits, axis=-1)

        def _run(self, ids, h, c):
            """ids (B, T) from state (h, c) (B, layers*units) -> top output (B, units), final (h, c);
            the generic LSTM cells."""
            x = self.encoder(ids)  # (B, T, E)
            xs = tf.transpose(x, [1, 0, 2])  # (T, B, E)
            top = h[:, (layers - 1) * units:]  # (B, units): the top layer's output before any step

            def body(t, top, h, c):
                top, h, c = self._cell_step(xs[t], h, c)
                return t + 1, top, h, c

            _, top, h, c = tf.while_loop(lambda t, *_: t < tf.shape(xs)[0], body, (tf.constant(0), top, h, c))
            return top, h, c

        def _zeros(self, ids):
            return tf.zeros(tf.stack([tf.shape(ids)[0], layers * units]), tf.float32)  # (B, layers*units)

        @tf.function(input_signature=input_signature(contract.TEXT_NEXT_CHAR))
        def next_char(self, ids):
            ids = self._checked(ids, "next_char")
            top, _, _ = self._run(ids, self._zeros(ids), self._zeros(ids))
            logits, probabilities = self._head(top)
            return {"logits": logits, "probabilities": probabilities}

        @tf.function(input_signature=input_signature(contract.TEXT_STEP))
        def step(self, ids, h, c):
            x = self.encoder(self._checked(ids, "step")[:, None])[:, 0]  # (B, E)
            out, h, c = self._cell_step(x, h, c)
            logits, probabilities = self._head(out)
            return {"logits": logits, "probabilities": probabilities, "h": h, "c": c}

        @tf.function(input_signature=input_signature(contract.TEXT_PRIME))
        def prime(self, ids):
            ids = self._checked(ids, "prime")
            top, h, c = self._run(ids, self._zeros(ids), self._zeros(ids))
            logits, probabilities = self._head(top)
            return {"logits": logits, "probabilities": probabilities, "h": h, "c": c}

        @tf.function(input_signature=input_signature(contract.TEXT_INFO))
        def info(self, ids):
            b = tf.shape(ids)[0]
            return {
                "vocabulary": tf.tile(self.vocabulary[None, :], tf.stack([b, 1])),  # (B, V)
                "maxlen": tf.fill(tf.reshape(b, [1]), tf.constant(maxlen, tf.int32)),  # (B,)
                "units": tf.fill(tf.reshape(b, [1]), tf.constant(units, tf.int32)),  # (B,)
                "layers": tf.fill(tf.reshape(b, [1]), tf.constant(layers, tf.int32)),  # (B,)
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
                n, ids, temperature = tf.identity(n), self._checked(ids, "generate"), tf.identity(temperature)

            top, h, c = self._run(ids, self._zeros(ids), self._zeros(ids))  # after the seed
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
                h_out, h, c = self._cell_step(x, h, c)
                return i + 1, h, c, self._logits(h_out), out.write(i, nxt)

            out = tf.TensorArray(tf.int32, size=n, element_shape=tf.TensorShape([None]))
            _, _, _, _, out = tf.while_loop(lambda i, *_: i < n, body,
                                            (tf.constant(0), h, c, self._logits(top), out))
            return {"ids": tf.transpose(out.stack(), [1, 0])}  # (n, B) -> (B, n)

    module = TextModule()
    signatures = concrete_signatures(module, contract.TEXT_NEXT_CHAR, contract.TEXT_STEP,
                                     contract.TEXT_PRIME, contract.TEXT_INFO, contract.TEXT_GENERATE)
    return module, signatures


def warmup_requests(cfg) -> list[tuple[str, dict[str, np.ndarray]]]:
    """One small request per signature, replayed by the server at load time."""
    zeros = np.zeros((1, cfg.layers * cfg.units), np.float32)
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

