"""Convolutional VAE on MNIST (Deep Learning with Python, 1st ed., 8.4), Keras 3 style.

The book's architecture is the default config. Two losses:
- `elbo` (default): the negative evidence lower bound per image, in nats: binary cross-entropy summed
  over the 784 pixels (a Bernoulli decoder, Kingma & Welling 2014, "Auto-Encoding Variational Bayes",
  arXiv:1312.6114, eq. 10) plus the analytic KL(q(z|x) || N(0, I)) of their Appendix B;
- `book`: the seed's weighting, the per-pixel MEAN cross-entropy plus 5e-4 x the mean over latent
  dimensions of -(1 + log var - mean^2 - var); not an ELBO, kept to compare with its val_loss 0.1831.

    genserve train vae --workdir runs/vae --epochs 10
    python -c "from genserve.training.vae import VAEConfig, train; train(VAEConfig(epochs=1), 'runs/vae')"

Checkpoints in <workdir>/: config.json, best encoder/decoder weights (by validation loss),
last.weights.h5 (model + optimizer, for --resume) and state.json (epoch, best, history). Each is written
to a temporary sibling and renamed, so a crash never leaves half a file under the real name; a file
that is unreadable anyway (truncated by a full disk, copied half) is named in a CheckpointError.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from genserve.files import atomic_path, atomic_write, atomic_write_json
from genserve.training import CheckpointError, JsonConfig
from genserve.training.common import progress_callbacks
from genserve.training.vae_eval import (  # noqa: F401 (the losses and evaluation are public here too)
    IMAGE_SHAPE,
    bce_sum,
    book_loss,
    decoder_logits,
    evaluate,
    kl_to_standard_normal,
)

LOSSES = ("elbo", "book")
CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
LAST_WEIGHTS = "last.weights.h5"
BEST_ENCODER = "best_encoder.weights.h5"
BEST_DECODER = "best_decoder.weights.h5"


@dataclass(frozen=True)
class VAEConfig(JsonConfig):
    """Model and training settings; defaults are the book's listing 8.23-8.27."""

    latent_dim: int = 2
    conv_filters: tuple[int, ...] = (32, 64, 64, 64)  # encoder Conv2D 3x3 'same' relu
    conv_strides: tuple[int, ...] = (1, 2, 1, 1)
    dense_units: int = 32
    loss: str = "elbo"  # "elbo" (nats per image) or "book"
    book_kl_weight: float = 5e-4
    learning_rate: float = 1e-3  # RMSprop's default, as the book used it
    batch_size: int = 16
    epochs: int = 10
    dataset: str = "mnist"  # "mnist", "fashion" or "synthetic"
    train_limit: int | None = None  # use the first N training images (quick runs)
    test_limit: int | None = None  # use the first N test images for validation
    seed: int = 1337

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if len(self.conv_filters) != len(self.conv_strides):
            raise ValueError("conv_filters and conv_strides must have the same length")
        if 28 % math.prod(self.conv_strides) or math.prod(self.conv_strides) != 2:
            raise ValueError("the decoder upsamples once by 2: conv_strides must multiply to 2")
        if self.latent_dim < 1 or self.batch_size < 1 or self.epochs < 0:
            raise ValueError("latent_dim and batch_size must be >= 1 and epochs >= 0")


# ------------------------------------------------------------------------------------ model
@keras.saving.register_keras_serializable(package="genserve")
class Sampling(layers.Layer):
    """z = mean + exp(log_var / 2) * eps, eps ~ N(0, I): the reparameterisation trick (Kingma & Welling, 2.4)."""

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_var = inputs  # (B, latent) each
        eps = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * eps

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


def build_encoder(cfg: VAEConfig) -> keras.Model:
    """images (B, 28, 28, 1) in [0, 1] -> [z_mean, z_log_var], each (B, latent)."""
    images = keras.Input(IMAGE_SHAPE, name="images")
    x = images
    for i, (filters, stride) in enumerate(zip(cfg.conv_filters, cfg.conv_strides)):
        x = layers.Conv2D(filters, 3, strides=stride, padding="same", activation="relu",
                          name=f"encoder_conv{i + 1}")(x)  # (B, 28 or 14, 28 or 14, filters)
    x = layers.Flatten(name="encoder_flatten")(x)  # (B, 14*14*filters)
    x = layers.Dense(cfg.dense_units, activation="relu", name="encoder_dense")(x)
    z_mean = layers.Dense(cfg.latent_dim, name="z_mean")(x)
    z_log_var = layers.Dense(cfg.latent_dim, name="z_log_var")(x)
    return keras.Model(images, [z_mean, z_log_var], name="encoder")


def build_decoder(cfg: VAEConfig) -> keras.Model:
    """z (B, latent) -> images (B, 28, 28, 1) in [0, 1]; the layer 'logits' holds the pre-sigmoid values."""
    side = 28 // math.prod(cfg.conv_strides)  # 14
    channels = cfg.conv_filters[-1]
    z = keras.Input((cfg.latent_dim,), name="z")
    x = layers.Dense(side * side * channels, activation="relu", name="decoder_dense")(z)
    x = layers.Reshape((side, side, channels), name="decoder_reshape")(x)  # (B, 14, 14, C)
    x = layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu",
                               name="decoder_deconv")(x)  # (B, 28, 28, 32)
    logits = layers.Conv2D(1, 3, padding="same", name="logits")(x)  # (B, 28, 28, 1)
    images = layers.Activation("sigmoid", name="images")(logits)
    return keras.Model(z, images, name="decoder")


class VAE(keras.Model):
    """Encoder + sampling + decoder, trained by a `train_step` override (no symbolic add_loss)."""

    def __init__(self, cfg: VAEConfig, **kwargs):
        super().__init__(name="vae", **kwargs)
        self.cfg = cfg
        self.encoder = build_encoder(cfg)
        self.decoder = build_decoder(cfg)
        self.sampling = Sampling(seed=cfg.seed, name="sampling")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker]

    def call(self, images, training=False):
        z_mean, z_log_var = self.encoder(images, training=training)
        return self.decoder(self.sampling([z_mean, z_log_var]), training=training)

    def _loss_terms(self, images, training):
        z_mean, z_log_var = self.encoder(images, training=training)  # (B, latent) each
        z = self.sampling([z_mean, z_log_var])
        logits = decoder_logits(self.decoder, z)  # (B, 28, 28, 1)
        reconstruction = bce_sum(images, logits)  # (B,)
        kl = kl_to_standard_normal(z_mean, z_log_var)  # (B,)
        if self.cfg.loss == "elbo":
            loss = reconstruction + kl
        else:
            loss = book_loss(images, logits, z_mean, z_log_var, self.cfg.book_kl_weight)
        return ops.mean(loss), ops.mean(reconstruction), ops.mean(kl)

    def _update(self, loss, reconstruction, kl):
        self.loss_tracker.update_state(loss)
        self.reconstruction_tracker.update_state(reconstruction)
        self.kl_tracker.update_state(kl)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        with tf.GradientTape() as tape:
            loss, reconstruction, kl = self._loss_terms(images, training=True)
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        return self._update(loss, reconstruction, kl)

    def test_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        return self._update(*self._loss_terms(images, training=False))


# ------------------------------------------------------------------------------------- data
def load_images(cfg: VAEConfig):
    """(x_train, x_test, y_test): images as uint8 (N, 28, 28, 1), labels int64; limits applied.

    Raises:
        genserve.data.DataError: the dataset is not available (the message says how to get it).
    """
    from genserve.data import mnist

    digits = mnist.load(cfg.dataset)
    x_train = digits.x_train[: cfg.train_limit, ..., None]
    x_test = digits.x_test[: cfg.test_limit, ..., None]
    return x_train, x_test, digits.y_test[: cfg.test_limit]


def make_dataset(images: np.ndarray, cfg: VAEConfig, shuffle: bool) -> tf.data.Dataset:
    """uint8 (N, 28, 28, 1) -> batches of float32 in [0, 1]; shuffled with the config's seed."""
    ds = tf.data.Dataset.from_tensor_slices(images)
    if shuffle:
        ds = ds.shuffle(len(images), seed=cfg.seed, reshuffle_each_iteration=True)
    ds = ds.batch(cfg.batch_size).map(lambda x: tf.cast(x, tf.float32) / 255.0,
                                      num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


# ------------------------------------------------------------------------------------ train
class _Checkpointer(keras.callbacks.Callback):
    """After each epoch: best encoder/decoder weights, the full state for --resume, one summary line."""

    def __init__(self, workdir: Path, total_epochs: int, state: dict):
        super().__init__()
        self.workdir, self.total_epochs, self.state = workdir, total_epochs, state
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        val = logs.get("val_loss", logs.get("loss"))
        improved = val < self.state["best_val_loss"]
        if improved:
            self.state.update(best_val_loss=val, best_epoch=epoch + 1)
            _save_weights(self.model.encoder, self.workdir / BEST_ENCODER)
            _save_weights(self.model.decoder, self.workdir / BEST_DECODER)
        _save_weights(self.model, self.workdir / LAST_WEIGHTS)  # model + optimizer state
        self.state["epoch"] = epoch + 1
        self.state["history"].append({"epoch": epoch + 1, **logs})
        atomic_write_json(self.workdir / STATE_FILE, self.state)
        order = ("loss", "reconstruction", "kl")
        keys = sorted(logs, key=lambda k: (k.startswith("val_"), order.index(k.removeprefix("val_"))
                                           if k.removeprefix("val_") in order else len(order), k))
        parts = "  ".join(f"{k} {logs[k]:.4f}" for k in keys)
        print(f"epoch {epoch + 1}/{self.total_epochs}  {parts}  "
              f"({time.perf_counter() - self.started:.1f}s){'  *best' if improved else ''}", flush=True)


def new_model(cfg: VAEConfig) -> VAE:
    """A compiled, built VAE (weights and optimizer variables exist)."""
    keras.utils.set_random_seed(cfg.seed)
    model = VAE(cfg)
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=cfg.learning_rate))
    model(np.zeros((1, *IMAGE_SHAPE), np.float32))  # build the weights
    model.optimizer.build(model.trainable_variables)
    return model


def train(cfg: VAEConfig, workdir: str | Path, resume: bool = False, data=None,
          verbose: int | None = None, progress=None) -> dict:
    """Train (or continue training) a VAE and checkpoint it into `workdir`.

    Args:
        cfg: the config; with `resume`, the saved config's model shape must match.
        workdir: checkpoint folder (created). Without `resume`, previous checkpoints are replaced.
        resume: continue from <workdir>/last.weights.h5 (weights, optimizer state, epoch count) up to
            `cfg.epochs` in total.
        data: optional (x_train, x_test) uint8 arrays (N, 28, 28, 1); loaded from `cfg.dataset` if None.
        verbose: progress (1; None: too) or none (0): a bar on a terminal, plain lines elsewhere.
        progress: a genserve.progress.TrainingProgress to report to (default: a new one).

    Returns:
        The state dict: epoch, best_val_loss, best_epoch, history (one dict of metrics per epoch).

    Raises:
        FileNotFoundError: `resume` without a checkpoint in `workdir`.
        ValueError: `resume` with a config whose model shape differs from the saved one.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    state = {"epoch": 0, "best_val_loss": float("inf"), "best_epoch": 0, "history": []}
    if resume:
        if not (workdir / LAST_WEIGHTS).exists() or not (workdir / STATE_FILE).exists():
            raise FileNotFoundError(f"nothing to resume in {workdir} (no {LAST_WEIGHTS}/{STATE_FILE})")
        saved = read_config(workdir, hint="delete it or train without --resume")
        shape_fields = ("latent_dim", "conv_filters", "conv_strides", "dense_units")
        if any(getattr(saved, f) != getattr(cfg, f) for f in shape_fields):
            raise ValueError(f"{workdir} holds a model with a different shape; train into a new workdir")
        state = _read_state(workdir / STATE_FILE)
    atomic_write(workdir / CONFIG_FILE, cfg.to_json())

    model = new_model(cfg)
    if resume:  # verified before the data is loaded: a damaged checkpoint fails fast
        _load_weights(model, workdir / LAST_WEIGHTS, "delete it or train without --resume")
    x_train, x_test = data if data is not None else load_images(cfg)[:2]
    if state["epoch"] < cfg.epochs:
        model.fit(make_dataset(x_train, cfg, shuffle=True), epochs=cfg.epochs,
                  initial_epoch=state["epoch"], validation_data=make_dataset(x_test, cfg, shuffle=False),
                  callbacks=progress_callbacks(verbose, progress, _Checkpointer(workdir, cfg.epochs, state)),
                  verbose=0, shuffle=False)
    return state


def load_trained(workdir: str | Path, which: str = "best") -> tuple[VAEConfig, keras.Model, keras.Model]:
    """Rebuild (config, encoder, decoder) from a training workdir.

    Args:
        which: "best" (lowest validation loss) or "last".

    Raises:
        FileNotFoundError: the workdir has no config or weights (the message names the file).
    """
    workdir = Path(workdir)
    if not (workdir / CONFIG_FILE).exists():
        raise FileNotFoundError(f"{workdir / CONFIG_FILE} not found: train with `genserve train vae` first")
    hint = "delete it and train again"
    cfg = read_config(workdir, hint)
    if which == "best":
        for name in (BEST_ENCODER, BEST_DECODER):
            if not (workdir / name).exists():
                raise FileNotFoundError(f"{workdir / name} not found: no finished epoch yet")
        encoder, decoder = build_encoder(cfg), build_decoder(cfg)
        _load_weights(encoder, workdir / BEST_ENCODER, hint + " (or use --which last)")
        _load_weights(decoder, workdir / BEST_DECODER, hint + " (or use --which last)")
        return cfg, encoder, decoder
    if which == "last":
        if not (workdir / LAST_WEIGHTS).exists():
            raise FileNotFoundError(f"{workdir / LAST_WEIGHTS} not found: no finished epoch yet")
        model = new_model(cfg)
        _load_weights(model, workdir / LAST_WEIGHTS, hint + " (or use --which best)")
        return cfg, model.encoder, model.decoder
    raise ValueError(f"which must be 'best' or 'last', got {which!r}")


def _save_weights(model, path: Path) -> None:
    """model.save_weights through a temporary sibling (genserve.files) renamed into place."""
    with atomic_path(path) as tmp:
        model.save_weights(tmp)


def _load_weights(model, path: Path, hint: str) -> None:
    """model.load_weights, turning any failure into one CheckpointError that names the file."""
    try:
        model.load_weights(path)
    except Exception as e:  # h5py/Keras raise OSError, ValueError, KeyError... for a damaged file
        reason = " ".join(str(e).split())[:160]
        raise CheckpointError(f"{path} is unreadable (truncated?); {hint} [{type(e).__name__}: "
                              f"{reason}]") from None


def read_config(workdir: Path, hint: str = "delete it and train again") -> VAEConfig:
    """The VAEConfig saved in `workdir`.

    Raises:
        FileNotFoundError: no config.json.
        CheckpointError: config.json is damaged or not a VAE config.
    """
    path = Path(workdir) / CONFIG_FILE
    try:
        return VAEConfig.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError,
            AttributeError) as e:
        raise CheckpointError(f"{path} is unreadable (truncated?); {hint} "
                              f"[{type(e).__name__}: {' '.join(str(e).split())[:160]}]") from None


def _read_state(path: Path) -> dict:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(state, dict) or not {"epoch", "best_val_loss", "best_epoch", "history"} <= set(state):
            raise ValueError("missing keys")
        return state
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path} is unreadable (truncated?); delete it or train without --resume "
                              f"[{type(e).__name__}: {' '.join(str(e).split())[:160]}]") from None
