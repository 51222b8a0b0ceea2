"""Character-level LSTM text generation (Deep Learning with Python, 8.1), trained from integer ids.

The book's recipe is the default (maxlen 60, step 3, LSTM(128) + Dense, RMSprop lr 0.01, batch 128),
with its faults fixed: windows are cut by `tf.data` from an int32 id array (no one-hot array), the
last 10 % of the corpus is a contiguous validation split (overlapping windows would leak a random
split), the loss is reported in nats/char and bits/char, the gradient norm is clipped (the book's
loss blows up near epoch 57), the best-by-val model is kept, and training resumes after interruption.
Beyond the book: stacked LSTMs (`layers`), dropout, Adam, a learning-rate schedule (cosine or
reduce-on-plateau, optional linear warmup), early stopping (`patience`) and `targets="all"`: the
loss at every position of each window (the next character after each prefix) instead of only the
last, 60 targets per window instead of 1 (with `step=maxlen` an epoch is one pass over the corpus);
validation stays the book's measure (the last position of the held-out windows, `val_step` apart).

    genserve train text --corpus shakespeare --max-chars 200000 --epochs 1 --workdir work/text
    genserve train text --layers 2 --units 256 --dropout 0.2 --optimizer adam --learning-rate 0.002 \
        --schedule cosine --patience 3 --workdir work/text-big

Workdir layout: `best.keras` (best validation loss), `last.keras` + `state.json` (for --resume),
`config.json`, `vocabulary.json`, `history.csv`. Every file is written to a temporary sibling and
renamed, so a crash never leaves half a checkpoint; an unreadable one is a `CheckpointError` naming it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
import zipfile
from pathlib import Path

from genserve.data.text import Vocabulary, load_corpus
from genserve.files import atomic_path, atomic_write
from genserve.training.common import progress_callbacks
from genserve.training.text_data import extra_training_text, make_dataset, split_ids
from genserve.training.text_config import (BEST_FILE, CONFIG_FILE, HISTORY_FILE,  # noqa: F401 - re-exported
                                          HISTORY_HEADER, LAST_FILE, OPTIMIZERS, SCHEDULES, STATE_FILE,
                                          TEXT_PRESETS, VOCAB_FILE, CheckpointError, TextConfig, preset)


def lstm_name(layer: int) -> str:
    """Keras name of the 0-based LSTM `layer`: "lstm" (the book's only one), then "lstm_2", "lstm_3", ..."""
    return "lstm" if layer == 0 else f"lstm_{layer + 1}"


def build_model(cfg: TextConfig, vocab_size: int):
    """ids (B, T) -> next-character logits (B, V): one-hot or Embedding, `layers` x LSTM(units)
    (each followed by Dropout when dropout > 0), Dense(V).

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
    for layer in range(cfg.layers):
        sequences = layer < cfg.layers - 1 or cfg.targets == "all"
        x = keras.layers.LSTM(cfg.units, return_sequences=sequences, recurrent_dropout=cfg.recurrent_dropout,
                              name=lstm_name(layer))(x)  # (B, [T,] units)
        if cfg.dropout > 0:
            x = keras.layers.Dropout(cfg.dropout, name=f"dropout_{layer + 1}")(x)
    logits = keras.layers.Dense(vocab_size, name="logits")(x)  # (B, V), or (B, T, V) for targets="all"
    model = keras.Model(ids, logits, name="char_lstm")
    lr = cfg.epoch_learning_rate(0)
    if cfg.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=lr, weight_decay=cfg.weight_decay, clipnorm=cfg.clipnorm)
    else:
        optimizer = (keras.optimizers.RMSprop if cfg.optimizer == "rmsprop" else keras.optimizers.Adam)(
            learning_rate=lr, clipnorm=cfg.clipnorm)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
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


def _fix_hint(which: str) -> str:
    if which == LAST_FILE:
        return f"delete it (and {STATE_FILE}) or train without --resume"
    if which == BEST_FILE:
        return f"retrain, or copy {LAST_FILE} over it if that one is readable"
    return "retrain into a fresh workdir"


def read_workdir_file(workdir: Path, name: str, which: str = BEST_FILE) -> str:
    """The text of a small workdir file (config.json, vocabulary.json, state.json).

    Raises:
        FileNotFoundError: missing; CheckpointError: unreadable or not JSON (one line naming the fix).
    """
    path = Path(workdir) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train first with `genserve train text --workdir {workdir}`")
    try:
        data = path.read_text(encoding="utf-8")
        json.loads(data)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{name} in {workdir} is unreadable ({type(e).__name__}); "
                              f"{_fix_hint(which)}") from None
    return data


def verify_checkpoint(path: Path) -> None:
    """Check a .keras file is a complete zip archive whose members match their CRCs.

    Raises:
        CheckpointError: truncated or corrupt, with what to do about it.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as e:
        bad, names = f"({type(e).__name__})", set()
    if bad is not None or "config.json" not in names:
        raise CheckpointError(f"checkpoint {path.name} in {path.parent} is unreadable (truncated?); "
                              f"{_fix_hint(path.name)}")


def load_checkpoint(workdir: Path, which: str = BEST_FILE):
    """(model, config, vocabulary) rebuilt from a workdir; `which` is best.keras or last.keras.

    Raises:
        FileNotFoundError: when the workdir holds no such checkpoint.
        CheckpointError: when the checkpoint, config.json or vocabulary.json is unreadable.
    """
    import keras

    workdir = Path(workdir)
    path = workdir / which
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train first with `genserve train text --workdir {workdir}`")
    verify_checkpoint(path)
    cfg = TextConfig.from_json(read_workdir_file(workdir, CONFIG_FILE, which))
    vocab = Vocabulary.from_json(read_workdir_file(workdir, VOCAB_FILE, which))
    onehot_layer()  # registers the custom layer
    try:
        model = keras.models.load_model(path)
    except Exception as e:  # noqa: BLE001 - any failure to rebuild means the same thing to the user
        raise CheckpointError(f"checkpoint {which} in {workdir} cannot be loaded ({type(e).__name__}); "
                              f"{_fix_hint(which)}") from None
    return model, cfg, vocab


def last_position_model(model):
    """For a targets="all" model ((B, T, V) logits): a view sharing its layers that returns the last
    position's logits (B, V), compiled with the same loss, to measure the book's validation loss."""
    import keras

    view = keras.Model(model.input, model.output[:, -1, :], name="char_lstm_last")
    view.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return view


def save_model_atomic(model, path: Path) -> None:
    """model.save through a temporary sibling (it keeps the .keras suffix Keras needs) and a rename."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, text)


def _epoch_callback(workdir: Path, cfg: TextConfig, log, val_ds=None):
    import keras

    class EpochEnd(keras.callbacks.Callback):
        """Per epoch: the scheduled learning rate; one summary line in nats/char and bits/char;
        best.keras, last.keras, state.json, history.csv (all atomic); early stopping after
        `patience` epochs without improvement; reduce-on-plateau for schedule "plateau"."""

        def __init__(self, best: float, since_best: int, lr: float | None):
            super().__init__()
            self.best, self.since_best, self.lr = best, since_best, lr
            self.stopped = False
            self.t0 = time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()
            if cfg.schedule == "plateau" and epoch >= cfg.warmup_epochs:
                lr = self.lr if self.lr is not None else cfg.learning_rate
            else:
                lr = cfg.epoch_learning_rate(epoch)
            self.lr = lr
            self.model.optimizer.learning_rate.assign(lr)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            if val_ds is not None:  # targets="all": the book's measure, the last position of each window
                logs["val_loss"] = float(last_position_model(self.model).evaluate(val_ds, verbose=0))
            loss, val = float(logs["loss"]), float(logs["val_loss"])
            seconds = time.perf_counter() - self.t0
            improved = val < self.best and math.isfinite(val)
            if improved:
                self.best, self.since_best = val, 0
                save_model_atomic(self.model, workdir / BEST_FILE)
            else:
                self.since_best += 1
            lr_used = self.lr
            if cfg.schedule == "plateau" and not improved and epoch + 1 >= cfg.warmup_epochs:
                # halve after each epoch without improvement (Keras ReduceLROnPlateau, patience 0)
                self.lr = max(self.lr * 0.5, cfg.learning_rate * cfg.min_lr_fraction)
            save_model_atomic(self.model, workdir / LAST_FILE)
            history = workdir / HISTORY_FILE
            rows = history.read_text().splitlines() if history.exists() else [HISTORY_HEADER]
            rows.append(f"{epoch + 1},{loss:.5f},{val:.5f},{val / math.log(2):.5f},{lr_used:.6g},{seconds:.2f}")
            _write_text(history, "\n".join(rows) + "\n")
            state = {"epoch": epoch + 1, "best_val_loss": self.best, "epochs_since_best": self.since_best,
                     "learning_rate": self.lr}
            _write_text(workdir / STATE_FILE, json.dumps(state))  # last: it names what is complete
            log(f"epoch {epoch + 1}/{self.params['epochs']}: loss {loss:.4f} nats/char, "
                f"val {val:.4f} nats/char = {val / math.log(2):.4f} bits/char, lr {lr_used:.3g}, {seconds:.1f} s"
                + (" (best, saved)" if improved else ""))
            if cfg.patience is not None and self.since_best >= cfg.patience:
                self.stopped = True
                self.model.stop_training = True
                log(f"early stop: no better val loss for {self.since_best} epochs (patience {cfg.patience}); "
                    f"best {self.best:.4f} nats/char kept in {BEST_FILE}")

    return EpochEnd


def _extra_text(cfg: TextConfig, text: str, extra_text: str | None) -> str:
    """The extra training text of `cfg.extra_train` beyond `text` ("" without one); see extra_training_text."""
    if cfg.extra_train is None:
        return ""
    if extra_text is None:
        extra_text = load_corpus(cfg.extra_train, lower=cfg.lower)
    return extra_training_text(text, extra_text, cfg.val_fraction, f"--corpus {cfg.corpus}",
                               f"--extra-train {cfg.extra_train}")


def train(cfg: TextConfig, workdir: str | Path, resume: bool = False, verbose: int | None = 1,
          log=print, text: str | None = None, progress=None, extra_text: str | None = None) -> dict:
    """Train (or resume) the char-LSTM into `workdir`.

    Args:
        cfg: the configuration; on resume only its `epochs` (and `patience`, when set) are used, the
            rest comes from config.json.
        workdir: checkpoint folder (created).
        resume: continue from last.keras and state.json.
        verbose: progress (1; None: too) or none (0): a bar on a terminal, plain lines elsewhere.
        log: where the per-epoch summary lines go.
        progress: a genserve.progress.TrainingProgress to report to (default: a new one).
        text: the corpus itself (tests); default loads `cfg.corpus`.
        extra_text: the `cfg.extra_train` corpus itself; default loads it (when set).

    Returns:
        {"epochs": completed epochs, "best_val_loss": nats/char, "best_val_bits": bits/char,
         "seconds_per_epoch": [...], "vocab_size": V, "early_stopped": bool}.

    Raises:
        ValueError / genserve.data.DataError: unusable corpus, config or workdir (a file);
        FileNotFoundError on a resume without a checkpoint; CheckpointError (a ValueError) when a
        resume finds an unreadable last.keras, state.json or config.json.
    """
    import keras

    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"workdir {workdir} is a file, not a folder")
    workdir.mkdir(parents=True, exist_ok=True)
    lr = None
    if resume:
        state_text = read_workdir_file(workdir, STATE_FILE, LAST_FILE)
        model, saved, vocab = load_checkpoint(workdir, LAST_FILE)
        cfg = dataclasses.replace(saved, epochs=cfg.epochs,  # the rest as first trained
                                  patience=saved.patience if cfg.patience is None else cfg.patience)
        _write_text(workdir / CONFIG_FILE, cfg.to_json())
        state = json.loads(state_text)
        initial_epoch, best = int(state["epoch"]), float(state["best_val_loss"])
        since_best, lr = int(state.get("epochs_since_best", 0)), state.get("learning_rate")
        history = workdir / HISTORY_FILE
        if history.exists():  # rows of an epoch cut short after its history write are dropped
            rows = history.read_text().splitlines()
            kept = rows[:1] + [r for r in rows[1:] if int(r.split(",")[0]) <= initial_epoch]
            _write_text(history, "\n".join(kept) + "\n")
        if text is None:
            text = load_corpus(cfg.corpus, lower=cfg.lower, max_chars=cfg.max_chars)
        extra = _extra_text(cfg, text, extra_text)
    else:
        if text is None:
            text = load_corpus(cfg.corpus, lower=cfg.lower, max_chars=cfg.max_chars)
        elif cfg.max_chars is not None:
            text = text[: cfg.max_chars]
        extra = _extra_text(cfg, text, extra_text)
        vocab = Vocabulary.from_text(text + extra)  # covers both: the export serves any of them
        keras.utils.set_random_seed(cfg.seed)
        model = build_model(cfg, len(vocab))
        initial_epoch, best, since_best = 0, math.inf, 0
        for stale in (HISTORY_FILE, STATE_FILE, BEST_FILE, LAST_FILE):
            (workdir / stale).unlink(missing_ok=True)
        _write_text(workdir / CONFIG_FILE, cfg.to_json())
        _write_text(workdir / VOCAB_FILE, vocab.to_json())
    ids = vocab.encode(text)  # (L,) int32
    train_ids, val_ids = split_ids(ids, cfg)
    if extra:  # a separate stream: no window joins the held-out tail (or the corpus's end) to it
        train_ids = [train_ids, vocab.encode(extra)]
    train_ds = make_dataset(train_ids, cfg, shuffle=True, targets=cfg.targets)
    val_ds = make_dataset(val_ids, cfg, shuffle=False, step=cfg.val_step,
                          batch_size=max(cfg.batch_size, 256) if cfg.targets == "all" else None)
    if initial_epoch >= cfg.epochs:
        log(f"already trained for {initial_epoch} of {cfg.epochs} epochs; nothing to do")
    own_val = cfg.targets == "all"  # fit cannot validate a (B, T, V) model on last-position targets
    callback = _epoch_callback(workdir, cfg, log, val_ds if own_val else None)(best, since_best, lr)
    model.fit(train_ds, validation_data=None if own_val else val_ds, epochs=cfg.epochs, initial_epoch=initial_epoch,
              verbose=0, shuffle=False,
              callbacks=progress_callbacks(verbose, progress, callback, keras.callbacks.TerminateOnNaN()))
    rows = (workdir / HISTORY_FILE).read_text().splitlines()[1:] if (workdir / HISTORY_FILE).exists() else []
    return {"epochs": len(rows), "best_val_loss": callback.best, "best_val_bits": callback.best / math.log(2),
            "seconds_per_epoch": [float(r.split(",")[-1]) for r in rows], "vocab_size": len(vocab),
            "early_stopped": callback.stopped}
