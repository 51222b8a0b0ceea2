"""Character-level LSTM text generation (Deep Learning with Python, 8.1), trained from integer ids.

The book's recipe is the default (maxlen 60, step 3, LSTM(128) + Dense, RMSprop lr 0.01, batch 128),
with its faults fixed: windows are cut by `tf.data` from an int32 id array (no one-hot array), the
last 10 % of the corpus is a contiguous validation split (overlapping windows would leak a random
split), the loss is reported in nats/char and bits/char, the gradient norm is clipped (the book's
loss blows up near epoch 57), the best-by-val model is kept, and training resumes after interruption.

    genserve train text --corpus shakespeare --max-chars 200000 --epochs 1 --workdir work/text

Workdir layout: `best.keras` (best validation loss), `last.keras` + `state.json` (for --resume),
`config.json`, `vocabulary.json`, `history.csv`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genserve.data.text import Vocabulary, load_corpus

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocabulary.json"
BEST_FILE = "best.keras"
LAST_FILE = "last.keras"
STATE_FILE = "state.json"
HISTORY_FILE = "history.csv"


@dataclass(frozen=True)
class TextConfig:
    """Hyper-parameters; defaults are the book's (8.1) plus genserve's fixes."""

    corpus: str = "shakespeare"  # a name from genserve.data.text.NAMED_CORPORA or a file path
    lower: bool = True  # the book lower-cases the corpus
    max_chars: int | None = None  # keep only the first max_chars characters of the corpus
    maxlen: int = 60  # window length
    step: int = 3  # stride between windows
    units: int = 128  # LSTM units
    # "onehot" (the book's input, built inside the model from the ids; never a materialised array) or
    # "embedding"; one-hot was faster in 3 of 4 one-epoch runs (benchmarks/text_generation.py, docs/text.md)
    encoding: str = "onehot"
    embedding_dim: int = 32  # only for encoding="embedding"
    learning_rate: float = 0.01  # RMSprop, as in the book
    clipnorm: float = 1.0  # gradient-norm clipping; the book has none and diverges near epoch 57
    batch_size: int = 128
    epochs: int = 60  # the book loops 60 times over one epoch each
    val_fraction: float = 0.1  # contiguous tail of the corpus
    seed: int = 1337

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, data: str) -> "TextConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in json.loads(data).items() if k in fields})


def split_ids(ids: np.ndarray, cfg: TextConfig) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous split: the first (1 - val_fraction) for training, the tail for validation.

    Raises:
        ValueError: when either part is shorter than one window plus its target.
    """
    cut = int(round(len(ids) * (1.0 - cfg.val_fraction)))
    train, val = ids[:cut], ids[cut:]
    need = cfg.maxlen + 1
    if len(train) < need or len(val) < need:
        raise ValueError(
            f"corpus too short: {len(ids)} characters give {len(train)} for training and {len(val)} "
            f"for validation, each needs at least maxlen + 1 = {need}"
        )
    return train, val


def make_dataset(ids: np.ndarray, cfg: TextConfig, shuffle: bool):
    """Windows (x, y) = (ids[s:s+maxlen], ids[s+maxlen]) for s = 0, step, 2*step, ... as a tf.data pipeline.

    Only the int32 id array lives in memory; each batch is gathered on the fly.

    Returns:
        A `tf.data.Dataset` of (x (B, maxlen) int32, y (B,) int32).
    """
    import tensorflow as tf

    starts = np.arange(0, len(ids) - cfg.maxlen, cfg.step, dtype=np.int64)  # (N,)
    table = tf.constant(ids, dtype=tf.int32)  # (L,)
    offsets = tf.range(cfg.maxlen + 1, dtype=tf.int64)  # (maxlen + 1,)
    ds = tf.data.Dataset.from_tensor_slices(starts)
    if shuffle:
        ds = ds.shuffle(len(starts), seed=cfg.seed, reshuffle_each_iteration=True)
    ds = ds.batch(cfg.batch_size)

    def gather(s):  # s: (B,)
        window = tf.gather(table, s[:, None] + offsets[None, :])  # (B, maxlen + 1)
        return window[:, :-1], window[:, -1]

    return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def build_model(cfg: TextConfig, vocab_size: int):
    """ids (B, T) -> next-character logits (B, V): one-hot or Embedding, LSTM(units), Dense(V).

    The book ends in a softmax; genserve keeps logits (the loss uses from_logits=True and sampling
    with a temperature works in logit space).
    """
    import keras

    ids = keras.Input(shape=(None,), dtype="int32", name="ids")  # (B, T)
    if cfg.encoding == "onehot":
        x = onehot_layer()(vocab_size, name="onehot")(ids)  # (B, T, V)
    elif cfg.encoding == "embedding":
        x = keras.layers.Embedding(vocab_size, cfg.embedding_dim, name="embedding")(ids)  # (B, T, E)
    else:
        raise ValueError(f"encoding must be 'onehot' or 'embedding', got {cfg.encoding!r}")
    h = keras.layers.LSTM(cfg.units, name="lstm")(x)  # (B, units)
    logits = keras.layers.Dense(vocab_size, name="logits")(h)  # (B, V)
    model = keras.Model(ids, logits, name="char_lstm")
    model.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate=cfg.learning_rate, clipnorm=cfg.clipnorm),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


@functools.lru_cache(maxsize=None)
def onehot_layer():
    """The `OneHot` layer class (created on first use, so importing this module stays TF-free)."""
    import keras

    @keras.saving.register_keras_serializable(package="genserve")
    class OneHot(keras.layers.Layer):
        """int ids (...,) -> float32 one-hot (..., depth), built inside the model (no one-hot array)."""

        def __init__(self, depth: int, **kwargs):
            super().__init__(**kwargs)
            self.depth = depth

        def call(self, ids):
            return keras.ops.one_hot(ids, self.depth, dtype="float32")

        def get_config(self):
            return {**super().get_config(), "depth": self.depth}

    return OneHot


def load_checkpoint(workdir: Path, which: str = BEST_FILE):
    """(model, config, vocabulary) rebuilt from a workdir; `which` is best.keras or last.keras.

    Raises:
        FileNotFoundError: when the workdir holds no such checkpoint.
    """
    import keras

    workdir = Path(workdir)
    path = workdir / which
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: train first with `genserve train text --workdir {workdir}`")
    cfg = TextConfig.from_json((workdir / CONFIG_FILE).read_text())
    vocab = Vocabulary.from_json((workdir / VOCAB_FILE).read_text(encoding="utf-8"))
    onehot_layer()  # registers the custom layer
    model = keras.models.load_model(path)
    return model, cfg, vocab


def _epoch_callback(workdir: Path, log):
    import keras

    class EpochEnd(keras.callbacks.Callback):
        """One summary line per epoch in nats/char and bits/char; best.keras, last.keras, state.json."""

        def __init__(self, best: float):
            super().__init__()
            self.best = best
            self.t0 = time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            loss, val = float(logs["loss"]), float(logs["val_loss"])
            seconds = time.perf_counter() - self.t0
            improved = val < self.best and math.isfinite(val)
            if improved:
                self.best = val
                self.model.save(workdir / BEST_FILE)
            self.model.save(workdir / LAST_FILE)
            state = {"epoch": epoch + 1, "best_val_loss": self.best}
            (workdir / STATE_FILE).write_text(json.dumps(state))
            new = not (workdir / HISTORY_FILE).exists()
            with open(workdir / HISTORY_FILE, "a") as f:
                if new:
                    f.write("epoch,loss_nats,val_loss_nats,val_bits,seconds\n")
                f.write(f"{epoch + 1},{loss:.5f},{val:.5f},{val / math.log(2):.5f},{seconds:.2f}\n")
            log(f"epoch {epoch + 1}/{self.params['epochs']}: loss {loss:.4f} nats/char, "
                f"val {val:.4f} nats/char = {val / math.log(2):.4f} bits/char, {seconds:.1f} s"
                + (" (best, saved)" if improved else ""))

    return EpochEnd


def train(cfg: TextConfig, workdir: str | Path, resume: bool = False, verbose: int = 1,
          log=print, text: str | None = None) -> dict:
    """Train (or resume) the char-LSTM into `workdir`.

    Args:
        cfg: the configuration; on resume only its `epochs` is used, the rest comes from config.json.
        workdir: checkpoint folder (created).
        resume: continue from last.keras and state.json.
        verbose: Keras progress bar (1) or none (0).
        log: where the per-epoch summary lines go.
        text: the corpus itself (tests); default loads `cfg.corpus`.

    Returns:
        {"epochs": completed epochs, "best_val_loss": nats/char, "best_val_bits": bits/char,
         "seconds_per_epoch": [...], "vocab_size": V}.

    Raises:
        ValueError / genserve.data.DataError: unusable corpus or config; FileNotFoundError on a
        resume without a checkpoint.
    """
    import keras

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if resume:
        model, saved, vocab = load_checkpoint(workdir, LAST_FILE)
        cfg = dataclasses.replace(saved, epochs=cfg.epochs)  # everything else as first trained
        (workdir / CONFIG_FILE).write_text(cfg.to_json())
        state = json.loads((workdir / STATE_FILE).read_text())
        initial_epoch, best = int(state["epoch"]), float(state["best_val_loss"])
        if text is None:
            text = load_corpus(cfg.corpus, lower=cfg.lower, max_chars=cfg.max_chars)
    else:
        if text is None:
            text = load_corpus(cfg.corpus, lower=cfg.lower, max_chars=cfg.max_chars)
        elif cfg.max_chars is not None:
            text = text[: cfg.max_chars]
        vocab = Vocabulary.from_text(text)
        keras.utils.set_random_seed(cfg.seed)
        model = build_model(cfg, len(vocab))
        initial_epoch, best = 0, math.inf
        for stale in (HISTORY_FILE, STATE_FILE, BEST_FILE, LAST_FILE):
            (workdir / stale).unlink(missing_ok=True)
        (workdir / CONFIG_FILE).write_text(cfg.to_json())
        (workdir / VOCAB_FILE).write_text(vocab.to_json(), encoding="utf-8")
    ids = vocab.encode(text)  # (L,) int32
    train_ids, val_ids = split_ids(ids, cfg)
    train_ds = make_dataset(train_ids, cfg, shuffle=True)
    val_ds = make_dataset(val_ids, cfg, shuffle=False)
    if initial_epoch >= cfg.epochs:
        log(f"already trained for {initial_epoch} of {cfg.epochs} epochs; nothing to do")
    callback = _epoch_callback(workdir, log)(best)
    model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, initial_epoch=initial_epoch,
              verbose=verbose, shuffle=False, callbacks=[callback, keras.callbacks.TerminateOnNaN()])
    rows = (workdir / HISTORY_FILE).read_text().splitlines()[1:] if (workdir / HISTORY_FILE).exists() else []
    return {"epochs": len(rows), "best_val_loss": callback.best, "best_val_bits": callback.best / math.log(2),
            "seconds_per_epoch": [float(r.split(",")[-1]) for r in rows], "vocab_size": len(vocab)}
