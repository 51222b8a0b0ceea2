"""DCGAN on MNIST (Deep Learning with Python, 1st ed., 8.5; Radford et al. 2016), Keras 3 style.

A generator z (B, latent) -> images (B, 28, 28, 1) in [0, 1] and a discriminator images -> one logit,
trained by a `keras.Model` whose `train_step` does one discriminator step and one generator step per
batch (the shape of keras-io's "DCGAN overriding train_step" and of TensorFlow's MNIST DCGAN tutorial):

- discriminator: binary cross-entropy with real = 1 and fake = 0, each target pushed into the range by
  `label_noise` x U(0, 1) (keras-io's "important trick"), so it never sees certain labels;
- generator: the non-saturating loss, BCE of D(G(z)) against "real" (Goodfellow et al. 2014, sec. 3);
- Adam with beta_1 = 0.5 (Radford et al. 2016, "Unsupervised Representation Learning with Deep
  Convolutional GANs", arXiv:1511.06434, sec. 4), lr 2e-4.

    genserve train gan --workdir runs/gan --epochs 10
    python -c "from genserve.training.gan import GANConfig, train; train(GANConfig(epochs=1), 'runs/gan')"

The workdir holds config.json, the checkpoint ckpt-<epoch>.weights.h5 (both networks and both
optimizers), state.json (epoch, history and the checkpoint's file name and sha256, checked on resume)
and samples/epoch_<n>.png (a fixed 8x8 grid after every epoch). Every file is written to a temporary
sibling and renamed; a checkpoint is only referenced by state.json once it is complete.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from genserve.data import atomic_write_bytes, sha256_of

IMAGE_SHAPE = (28, 28, 1)
CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
SAMPLES_DIR = "samples"
CHECKPOINT_PATTERN = "ckpt-{epoch:04d}.weights.h5"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or corrupt; the message says what to do."""


@dataclass(frozen=True)
class GANConfig:
    """Model and training settings."""

    latent_dim: int = 100  # the TF tutorial's 100 (keras-io: 128)
    gen_filters: tuple[int, ...] = (128, 64)  # Dense -> 7x7xF0 -> Conv2DTranspose 4x4/2 -> 14x14xF1 -> 28x28x1
    disc_filters: tuple[int, ...] = (32, 64)  # one stride-2 Conv2D 4x4 per entry
    gen_batchnorm: bool = True  # BatchNormalization after the generator's hidden layers (Radford et al.)
    dropout: float = 0.3  # discriminator, after each convolution (the TF tutorial)
    learning_rate: float = 2e-4
    beta_1: float = 0.5
    label_noise: float = 0.05
    batch_size: int = 64
    epochs: int = 10
    dataset: str = "mnist"  # "mnist", "fashion" or "synthetic"
    train_limit: int | None = None  # use the first N training images (quick runs)
    grid: int = 8  # side of the per-epoch sample grid
    seed: int = 1337

    def __post_init__(self) -> None:
        if len(self.gen_filters) != 2:
            raise ValueError("gen_filters needs 2 entries: 7x7 -> 14x14 -> 28x28")
        if self.latent_dim < 1 or self.batch_size < 1 or self.epochs < 0 or not self.disc_filters:
            raise ValueError("latent_dim and batch_size must be >= 1, epochs >= 0, disc_filters non-empty")
        if not 0 <= self.label_noise < 0.5:
            raise ValueError(f"label_noise must be in [0, 0.5), got {self.label_noise}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "GANConfig":
        raw = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in known})


SHAPE_FIELDS = ("latent_dim", "gen_filters", "disc_filters", "gen_batchnorm")


# ------------------------------------------------------------------------------------ model
def build_generator(cfg: GANConfig) -> keras.Model:
    """z (B, latent) -> images (B, 28, 28, 1) in [0, 1] (sigmoid output, like keras-io's DCGAN)."""
    f0, f1 = cfg.gen_filters
    z = keras.Input((cfg.latent_dim,), name="z")
    bn = cfg.gen_batchnorm
    x = layers.Dense(7 * 7 * f0, use_bias=not bn, name="g_dense")(z)
    if bn:
        x = layers.BatchNormalization(name="g_dense_bn")(x)
    x = layers.LeakyReLU(0.2, name="g_dense_act")(x)
    x = layers.Reshape((7, 7, f0), name="g_reshape")(x)  # (B, 7, 7, F0)
    x = layers.Conv2DTranspose(f1, 4, strides=2, padding="same", use_bias=not bn,
                               name="g_deconv1")(x)  # (B, 14, 14, F1)
    if bn:
        x = layers.BatchNormalization(name="g_deconv1_bn")(x)
    x = layers.LeakyReLU(0.2, name="g_deconv1_act")(x)
    images = layers.Conv2DTranspose(1, 4, strides=2, padding="same", activation="sigmoid",
                                    name="images")(x)  # (B, 28, 28, 1)
    return keras.Model(z, images, name="generator")


def build_discriminator(cfg: GANConfig) -> keras.Model:
    """images (B, 28, 28, 1) in [0, 1] -> logit (B, 1) that the image is real."""
    images = keras.Input(IMAGE_SHAPE, name="images")
    x = images
    for i, filters in enumerate(cfg.disc_filters):
        x = layers.Conv2D(filters, 4, strides=2, padding="same", name=f"d_conv{i + 1}")(x)  # (B, 14, 14, F) ...
        x = layers.LeakyReLU(0.2, name=f"d_conv{i + 1}_act")(x)
        x = layers.Dropout(cfg.dropout, name=f"d_dropout{i + 1}")(x)
    x = layers.Flatten(name="d_flatten")(x)
    logit = layers.Dense(1, name="logit")(x)  # (B, 1)
    return keras.Model(images, logit, name="discriminator")


def bce_with_logits(targets, logits):
    """Mean binary cross-entropy from logits: max(l, 0) - l t + log(1 + exp(-|l|))."""
    return ops.mean(ops.relu(logits) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits))))


class GAN(keras.Model):
    """Generator + discriminator; `train_step` alternates one D and one G update per batch."""

    def __init__(self, cfg: GANConfig, **kwargs):
        super().__init__(name="gan", **kwargs)
        self.cfg = cfg
        self.generator = build_generator(cfg)
        self.discriminator = build_discriminator(cfg)
        self.seed_generator = keras.random.SeedGenerator(cfg.seed)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.d_real_tracker = keras.metrics.Mean(name="d_real")  # mean D(x) on real images
        self.d_fake_tracker = keras.metrics.Mean(name="d_fake")  # mean D(G(z)) before the D step

    def compile(self, d_optimizer, g_optimizer, **kwargs):
        super().compile(**kwargs)
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker, self.d_real_tracker, self.d_fake_tracker]

    def call(self, z, training=False):
        return self.generator(z, training=training)

    def train_step(self, data):
        real = data[0] if isinstance(data, (tuple, list)) else data  # (B, 28, 28, 1) in [0, 1]
        batch = ops.shape(real)[0]
        noise = self.cfg.label_noise
        z = keras.random.normal((batch, self.cfg.latent_dim), seed=self.seed_generator)
        fake = self.generator(z, training=True)
        # 1) discriminator: real -> ~1, fake -> ~0 (noisy targets)
        real_targets = 1.0 - noise * keras.random.uniform((batch, 1), seed=self.seed_generator)
        fake_targets = noise * keras.random.uniform((batch, 1), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            real_logits = self.discriminator(real, training=True)  # (B, 1)
            fake_logits = self.discriminator(fake, training=True)
            d_loss = bce_with_logits(real_targets, real_logits) + bce_with_logits(fake_targets, fake_logits)
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))
        # 2) generator: make D call fresh fakes real (non-saturating loss)
        z = keras.random.normal((batch, self.cfg.latent_dim), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            logits = self.discriminator(self.generator(z, training=True), training=True)
            g_loss = bce_with_logits(ops.ones_like(logits), logits)
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        self.d_real_tracker.update_state(ops.mean(ops.sigmoid(real_logits)))
        self.d_fake_tracker.update_state(ops.mean(ops.sigmoid(fake_logits)))
        return {m.name: m.result() for m in self.metrics}


def new_model(cfg: GANConfig) -> GAN:
    """A compiled, built GAN (weights and both optimizers' variables exist, so weights can load)."""
    keras.utils.set_random_seed(cfg.seed)
    model = GAN(cfg)
    adam = lambda: keras.optimizers.Adam(cfg.learning_rate, beta_1=cfg.beta_1)  # noqa: E731
    model.compile(d_optimizer=adam(), g_optimizer=adam())
    model.discriminator(model(np.zeros((1, cfg.latent_dim), np.float32)))  # build the weights
    model.d_optimizer.build(model.discriminator.trainable_variables)
    model.g_optimizer.build(model.generator.trainable_variables)
    return model


def latent_from_seeds(seeds, latent_dim: int):
    """z (B, latent): row i = tf.random.stateless_normal([latent], seed=[seeds[i], 0]).

    The `sample` signature's draw: stateless, so a seed gives the same z (and digit) on every load,
    server and batch size. Args: seeds int64 (B,).
    """
    seeds = tf.cast(seeds, tf.int64)  # (B,)

    def one(seed):
        return tf.random.stateless_normal([latent_dim], seed=tf.stack([seed, tf.zeros_like(seed)]))

    return tf.map_fn(one, seeds, fn_output_signature=tf.TensorSpec([latent_dim], tf.float32))


# ------------------------------------------------------------------------------------- data
def load_images(cfg: GANConfig) -> np.ndarray:
    """Training images as uint8 (N, 28, 28, 1), limit applied.

    Raises:
        genserve.data.DataError: the dataset is not available (the message says how to get it).
    """
    from genserve.data import mnist

    return mnist.load(cfg.dataset).x_train[: cfg.train_limit, ..., None]


def make_dataset(images: np.ndarray, cfg: GANConfig) -> tf.data.Dataset:
    """uint8 (N, 28, 28, 1) -> shuffled batches of float32 in [0, 1] (full batches only)."""
    ds = tf.data.Dataset.from_tensor_slices(images).shuffle(len(images), seed=cfg.seed,
                                                            reshuffle_each_iteration=True)
    ds = ds.batch(cfg.batch_size, drop_remainder=len(images) >= cfg.batch_size)
    return ds.map(lambda x: tf.cast(x, tf.float32) / 255.0, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


# ------------------------------------------------------------------------------------ train
def grid_png(images: np.ndarray, n: int) -> bytes:
    """(n*n, 28, 28[, 1]) in [0, 1] -> PNG bytes of the n x n tiled picture."""
    from genserve.clients.gan import png_bytes, tile

    return png_bytes(tile(np.asarray(images), n))


class _EpochEnd(keras.callbacks.Callback):
    """After each epoch: checkpoint + state (atomically, in that order), the sample grid, one line."""

    def __init__(self, workdir: Path, cfg: GANConfig, state: dict):
        super().__init__()
        self.workdir, self.cfg, self.state = workdir, cfg, state
        self.fixed_z = np.random.default_rng(cfg.seed).standard_normal((cfg.grid ** 2, cfg.latent_dim))
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        seconds = time.perf_counter() - self.started
        previous = self.state.get("checkpoint")
        name = CHECKPOINT_PATTERN.format(epoch=epoch + 1)
        save_checkpoint(self.model, self.workdir / name)
        self.state.update(epoch=epoch + 1, checkpoint={"file": name, "sha256": sha256_of(self.workdir / name)})
        self.state["history"].append({"epoch": epoch + 1, **logs, "seconds": round(seconds, 2)})
        write_json(self.workdir / STATE_FILE, self.state)
        if previous and previous["file"] != name:
            (self.workdir / previous["file"]).unlink(missing_ok=True)
        images = np.asarray(self.model.generator(self.fixed_z.astype(np.float32), training=False))
        png = self.workdir / SAMPLES_DIR / f"epoch_{epoch + 1:04d}.png"
        atomic_write_bytes(png, grid_png(images, self.cfg.grid))
        parts = "  ".join(f"{k} {v:.4f}" for k, v in logs.items())
        print(f"epoch {epoch + 1}/{self.cfg.epochs}  {parts}  ({seconds:.1f}s)  -> {png.name}", flush=True)


def save_checkpoint(model: GAN, path: Path) -> None:
    """Both networks and both optimizers, written to a temporary sibling and renamed."""
    tmp = path.with_name(f".{path.name[:-len('.weights.h5')]}.tmp.weights.h5")  # Keras wants the suffix
    model.save_weights(tmp)
    tmp.replace(path)


def load_checkpoint(workdir: Path, cfg: GANConfig | None = None) -> tuple[GANConfig, GAN, dict]:
    """Rebuild (config, GAN with its checkpoint loaded, state) from a workdir, verifying the file.

    Raises:
        CheckpointError: no config/state/checkpoint, or the checkpoint's sha256 differs from the one
            state.json recorded (a corrupt or replaced file), or it does not load.
    """
    workdir = Path(workdir)
    for name in (CONFIG_FILE, STATE_FILE):
        if not (workdir / name).exists():
            raise CheckpointError(f"{workdir / name} not found: no finished epoch in {workdir} "
                                  "(train with `genserve train gan` first)")
    saved = GANConfig.from_json((workdir / CONFIG_FILE).read_text())
    state = json.loads((workdir / STATE_FILE).read_text())
    entry = state.get("checkpoint") or {}
    path = workdir / entry.get("file", "?")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} named by {workdir / STATE_FILE} is missing")
    actual = sha256_of(path)
    if actual != entry.get("sha256"):
        raise CheckpointError(f"checkpoint {path} is corrupt: its sha256 {actual[:12]}... differs from "
                              f"{str(entry.get('sha256'))[:12]}... recorded in state.json; "
                              "train again into a new workdir (without --resume)")
    model = new_model(cfg or saved)
    try:
        model.load_weights(path)
    except Exception as e:  # noqa: BLE001 - h5py/Keras raise many types for a bad file
        raise CheckpointError(f"checkpoint {path} does not load ({type(e).__name__}: {e})") from None
    return saved, model, state


def train(cfg: GANConfig, workdir: str | Path, resume: bool = False, data: np.ndarray | None = None,
          verbose: int | None = None) -> dict:
    """Train (or continue training) a DCGAN and checkpoint it into `workdir` after every epoch.

    Args:
        cfg: the config; with `resume`, the saved model shape must match.
        workdir: checkpoint folder (created). Without `resume`, a previous run's state, checkpoints
            and sample grids there are removed first.
        resume: continue from the verified last checkpoint up to `cfg.epochs` in total.
        data: optional uint8 images (N, 28, 28, 1); loaded from `cfg.dataset` if None.
        verbose: Keras progress bar (1) or none (0); default: a bar only on a terminal.

    Returns:
        The state dict: epoch, checkpoint, history (one dict of metrics per epoch).

    Raises:
        CheckpointError: `resume` without a usable checkpoint (missing or corrupt).
        ValueError: `resume` with a config whose model shape differs from the saved one.
        genserve.data.DataError: the dataset is not available.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if resume:
        if not (workdir / STATE_FILE).exists():
            raise CheckpointError(f"nothing to resume in {workdir} (no {STATE_FILE})")
        saved = GANConfig.from_json((workdir / CONFIG_FILE).read_text())
        if any(getattr(saved, f) != getattr(cfg, f) for f in SHAPE_FIELDS):
            raise ValueError(f"{workdir} holds a model with a different shape; train into a new workdir")
        _, model, state = load_checkpoint(workdir, cfg)
    else:  # a fresh run replaces what a previous one left
        for stale in [workdir / STATE_FILE, *workdir.glob("ckpt-*.weights.h5"),
                      *(workdir / SAMPLES_DIR).glob("epoch_*.png")]:
            stale.unlink(missing_ok=True)
        model, state = new_model(cfg), {"epoch": 0, "checkpoint": None, "history": []}
    atomic_write_bytes(workdir / CONFIG_FILE, cfg.to_json().encode("utf-8"))
    images = data if data is not None else load_images(cfg)
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 0
    if state["epoch"] < cfg.epochs:
        model.fit(make_dataset(images, cfg), epochs=cfg.epochs, initial_epoch=state["epoch"],
                  callbacks=[_EpochEnd(workdir, cfg, state)], verbose=verbose, shuffle=False)
    return state


def load_generator(workdir: str | Path) -> tuple[GANConfig, keras.Model]:
    """(config, generator) of a workdir's verified last checkpoint."""
    cfg, model, _ = load_checkpoint(workdir)
    return cfg, model.generator


# --------------------------------------------------------------------------------- evaluate
def generate_images(generator: keras.Model, n: int, latent_dim: int, seed: int = 0,
                    batch_size: int = 500) -> np.ndarray:
    """n images float32 (n, 28, 28, 1) from z ~ N(0, I) drawn with numpy's seeded generator."""
    z = np.random.default_rng(seed).standard_normal((n, latent_dim)).astype(np.float32)
    return np.concatenate([np.asarray(generator(z[i:i + batch_size], training=False))
                           for i in range(0, n, batch_size)])


def evaluate(workdir: str | Path, samples: int = 5000, seed: int = 0, classifier=None,
             test_images: np.ndarray | None = None) -> dict:
    """Classifier score and Fréchet distance of `samples` generated digits vs the real test set.

    Args:
        classifier: a model from genserve.training.mnist_classifier (default: the cached one of the
            workdir's dataset, trained once if absent).
        test_images: uint8 (N, 28, 28[, 1]) real images (default: the dataset's test set).
    Returns:
        genserve.training.mnist_classifier.sample_quality's dict plus "classifier_accuracy".
    """
    from genserve.training import mnist_classifier as mc

    cfg, generator = load_generator(workdir)
    info = {}
    if classifier is None:
        classifier, info = mc.load_or_train(cfg.dataset)
    if test_images is None:
        from genserve.data import mnist

        test_images = mnist.load(cfg.dataset).x_test
    fake = generate_images(generator, samples, cfg.latent_dim, seed)
    out = mc.sample_quality(classifier, fake, np.asarray(test_images), seed=seed)
    return {**out, "classifier_accuracy": info.get("test_accuracy")}


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(Path(path), json.dumps(obj, indent=2).encode("utf-8"))
