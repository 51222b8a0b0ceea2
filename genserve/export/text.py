"""Export the char-LSTM as a versioned SavedModel with the contract's four signatures.

    genserve export text --workdir work/text --models-dir models

Signatures (genserve/contract.py, TEXT): `next_char` (the book's model, default), `step` (one LSTM
step with (h, c) over the wire), `prime` (seed ids -> state after the seed), `info` (vocabulary,
maxlen, units). Every signature runs the LSTM through its cell in a `tf.while_loop`/single call, never
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

        def _head(self, h):  # h: (B, units)
            logits = tf.cast(self.dense(h), tf.float32)  # (B, V)
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

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="ids")])
        def next_char(self, ids):
            h, c = self._run(ids, self._zeros(ids), self._zeros(ids))
            logits, probabilities = self._head(h)
            return {"logits": logits, "probabilities": probabilities}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="ids"),
                                      tf.TensorSpec([None, None], tf.float32, name="h"),
                                      tf.TensorSpec([None, None], tf.float32, name="c")])
        def step(self, ids, h, c):
            x = self.encoder(ids[:, None])[:, 0]  # (B, E)
            out, (h, c) = self.cell(x, [h, c], training=False)
            logits, probabilities = self._head(out)
            return {"logits": logits, "probabilities": probabilities, "h": h, "c": c}

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="ids")])
        def prime(self, ids):
            h, c = self._run(ids, self._zeros(ids), self._zeros(ids))
            logits, probabilities = self._head(h)
            return {"logits": logits, "probabilities": probabilities, "h": h, "c": c}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="ids")])
        def info(self, ids):
            b = tf.shape(ids)[0]
            return {
                "vocabulary": tf.tile(self.vocabulary[None, :], tf.stack([b, 1])),  # (B, V)
                "maxlen": tf.fill(tf.reshape(b, [1]), tf.constant(maxlen, tf.int32)),  # (B,)
                "units": tf.fill(tf.reshape(b, [1]), tf.constant(units, tf.int32)),  # (B,)
            }

    module = TextModule()
    signatures = {
        contract.TEXT_NEXT_CHAR.name: module.next_char.get_concrete_function(),
        contract.TEXT_STEP.name: module.step.get_concrete_function(),
        contract.TEXT_PRIME.name: module.prime.get_concrete_function(),
        contract.TEXT_INFO.name: module.info.get_concrete_function(),
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
