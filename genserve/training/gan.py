"""DCGAN on MNIST (Deep Learning with Python, 1st ed., 8.5; Radford et al. 2016): data, training loop,
checkpoints, evaluation. The model, its config and the named presets are in `gan_model.py`.

    genserve train gan --workdir runs/gan --epochs 10
    genserve train gan --workdir runs/gan-best --preset best      # the measured recipe (docs/gan.md)
    python -c "from genserve.training.gan import GANConfig, train; train(GANConfig(epochs=1), 'runs/gan')"

The workdir holds config.json, the checkpoint ckpt-<epoch>.weights.h5 (both networks, the averaged
generator if any, both optimizers), state.json (epoch, history and the checkpoint's file name and
sha256, checked on resume) and samples/epoch_<n>.png (a fixed 8x8 grid after every epoch). Every file
is written atomically (genserve.files); a checkpoint is only referenced by state.json once complete.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from genserve.data import sha256_of
from genserve.files import atomic_path, atomic_write, atomic_write_json
from genserve.training.common import (CONFIG_FILE, STATE_FILE, CheckpointError, config_for_run,
                                      progress_callbacks)
from genserve.training.gan_model import (GAN, GAN_PRESETS, IMAGE_SHAPE, SHAPE_FIELDS, GANConfig,  # noqa: F401
                                         bce_with_logits, build_discriminator, build_generator,
                                         latent_from_seeds, new_model, preset)

SAMPLES_DIR = "samples"
CHECKPOINT_PATTERN = "ckpt-{epoch:04d}.weights.h5"


# ------------------------------------------------------------------------------------- data
def load_images(cfg: GANConfig) -> tuple[np.ndarray, np.ndarray]:
    """Training images as uint8 (N, 28, 28, 1) and their labels int64 (N,), limit applied.

    Raises:
        genserve.data.DataError: the dataset is not available (the message says how to get it).
    """
    from genserve.data import mnist

    digits = mnist.load(cfg.dataset)
    return digits.x_train[: cfg.train_limit, ..., None], digits.y_train[: cfg.train_limit]


def make_dataset(images: np.ndarray, cfg: GANConfig, labels: np.ndarray | None = None) -> tf.data.Dataset:
    """uint8 (N, 28, 28, 1) -> shuffled batches of float32 in [0, 1] (full batches only); with
    `labels` (N,), batches of (images, int32 labels)."""
    scale = lambda x: tf.cast(x, tf.float32) / 255.0  # noqa: E731
    if labels is None:
        ds, prepare = tf.data.Dataset.from_tensor_slices(images), scale
    else:
        ds = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32)))
        prepare = lambda x, y: (scale(x), y)  # noqa: E731
    ds = ds.shuffle(len(images), seed=cfg.seed, reshuffle_each_iteration=True)
    ds = ds.batch(cfg.batch_size, drop_remainder=len(images) >= cfg.batch_size)
    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


# ------------------------------------------------------------------------------------ train
def grid_png(images: np.ndarray, n: int) -> bytes:
    """(n*n, 28, 28[, 1]) in [0, 1] -> PNG bytes of the n x n tiled picture."""
    from genserve.clients.images import png_bytes, tile

    return png_bytes(tile(np.asarray(images), n))


class _EpochEnd(keras.callbacks.Callback):
    """After each epoch: checkpoint + state (atomically, in that order), the sample grid, one line."""

    def __init__(self, workdir: Path, cfg: GANConfig, state: dict):
        super().__init__()
        self.workdir, self.cfg, self.state = workdir, cfg, state
        self.fixed_z = np.random.default_rng(cfg.seed).standard_normal((cfg.grid ** 2, cfg.latent_dim))
        self.started = time.perf_counter()
        self.monitor = Monitor(cfg) if cfg.monitor_samples else None

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        seconds = time.perf_counter() - self.started
        if self.monitor is not None:  # scored before the checkpoint, so state.json records it
            logs.update(self.monitor(self.model.exported_generator))
        previous = self.state.get("checkpoint")
        name = CHECKPOINT_PATTERN.format(epoch=epoch + 1)
        save_checkpoint(self.model, self.workdir / name)
        self.state.update(epoch=epoch + 1, checkpoint={"file": name, "sha256": sha256_of(self.workdir / name)})
        self.state["history"].append({"epoch": epoch + 1, **logs, "seconds": round(seconds, 2)})
        atomic_write_json(self.workdir / STATE_FILE, self.state)
        if previous and previous["file"] != name:
            (self.workdir / previous["file"]).unlink(missing_ok=True)
        images = np.asarray(self.model.exported_generator(self.fixed_z.astype(np.float32), training=False))
        png = self.workdir / SAMPLES_DIR / f"epoch_{epoch + 1:04d}.png"
        atomic_write(png, grid_png(images, self.cfg.grid))
        parts = "  ".join(f"{k} {v:.4f}" for k, v in logs.items())
        print(f"epoch {epoch + 1}/{self.cfg.epochs}  {parts}  ({seconds:.1f}s)  -> {png.name}", flush=True)


class Monitor:
    """Scores a generator after an epoch: `monitor_samples` digits (seed 0) against the test set, with
    the evaluation classifier (trained once and cached on first use; see mnist_classifier)."""

    def __init__(self, cfg: GANConfig):
        self.cfg, self.classifier, self.test_images = cfg, None, None

    def __call__(self, generator: keras.Model) -> dict:
        from genserve.training import mnist_classifier as mc

        if self.classifier is None:
            from genserve.data import mnist

            self.classifier, _ = mc.load_or_train(self.cfg.dataset)
            self.test_images = mnist.load(self.cfg.dataset).x_test
        fake = generate_images(generator, self.cfg.monitor_samples, self.cfg.latent_dim, seed=0)
        out = mc.sample_quality(self.classifier, fake, np.asarray(self.test_images), seed=0)
        return {"score": out["score"], "fid": out["fid"], "fid_ratio": out["fid_ratio"]}


def save_checkpoint(model: GAN, path: Path) -> None:
    """Both networks (and the averaged generator) and both optimizers, atomically."""
    with atomic_path(path) as tmp:
        model.save_weights(tmp)


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
          verbose: int | None = None, progress=None, labels: np.ndarray | None = None) -> dict:
    """Train (or continue training) a DCGAN and checkpoint it into `workdir` after every epoch.

    Args:
        cfg: the config; with `resume`, the saved model shape must match.
        workdir: checkpoint folder (created). Without `resume`, a previous run's state, checkpoints
            and sample grids there are removed first.
        resume: continue from the verified last checkpoint up to `cfg.epochs` in total.
        data: optional uint8 images (N, 28, 28, 1); loaded from `cfg.dataset` (with labels) if None.
        labels: int (N,) labels of `data`, needed when `cfg.classes` (a conditional GAN).
        verbose: progress (1; None: too) or none (0): a bar on a terminal, plain lines elsewhere.
        progress: a genserve.progress.TrainingProgress to report to (default: a new one).

    Returns:
        The state dict: epoch, checkpoint, history (one dict of metrics per epoch).

    Raises:
        CheckpointError: `resume` without a usable checkpoint (missing or corrupt).
        ValueError: `resume` with a config whose model shape differs from the saved one, or
            `data` without the `labels` a conditional config needs.
        genserve.data.DataError: the dataset is not available.
    """
    if cfg.classes and data is not None and labels is None:
        raise ValueError("a conditional GAN (classes > 0) needs the labels of its training images")
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
    atomic_write(workdir / CONFIG_FILE, cfg.to_json())
    images, labels = (data, labels) if data is not None else load_images(cfg)
    if cfg.classes:
        check_labels(labels, len(images), cfg.classes)
    if state["epoch"] < cfg.epochs:
        model.fit(make_dataset(images, cfg, labels if cfg.classes else None), epochs=cfg.epochs, initial_epoch=state["epoch"],
                  callbacks=progress_callbacks(verbose, progress, _EpochEnd(workdir, cfg, state)),
                  verbose=0, shuffle=False)
    return state


def check_labels(labels: np.ndarray, n: int, classes: int) -> None:
    """ValueError unless `labels` are n integers in [0, classes) (a conditional GAN's embedding rows)."""
    labels = np.asarray(labels)
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be {n} integers (one per image), got {labels.dtype} {labels.shape}")
    if n and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"labels must be in [0, {classes}) for classes={classes}, "
                         f"got {labels.min()}..{labels.max()}")


def resolve_config(workdir, preset_name: str | None = None, resume: bool = False, **overrides) -> GANConfig:
    """The config of `genserve train gan`: see genserve.training.common.config_for_run ("demo" by default)."""
    return config_for_run(GANConfig, GAN_PRESETS, "GAN", workdir, preset_name, resume, **overrides)


def load_generator(workdir: str | Path) -> tuple[GANConfig, keras.Model]:
    """(config, generator) of a workdir's verified last checkpoint."""
    cfg, model, _ = load_checkpoint(workdir)
    return cfg, model.exported_generator


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

