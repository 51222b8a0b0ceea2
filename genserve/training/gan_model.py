"""The DCGAN itself: its config (and named presets), the two networks, and the training step.

A generator z (B, latent) -> images (B, 28, 28, 1) in [0, 1] and a discriminator images -> one logit,
trained by a `keras.Model` whose `train_step` does one discriminator step and one generator step per
batch (the shape of keras-io's "DCGAN overriding train_step" and of TensorFlow's MNIST DCGAN tutorial):

- discriminator: binary cross-entropy with real = 1 and fake = 0, each target optionally pushed into
  the range by `label_noise` x U(0, 1) (keras-io's trick), plus optionally the R1 penalty
  (gamma / 2) E_real |grad_x D(x)|^2 (Mescheder et al. 2018, "Which Training Methods for GANs do
  actually Converge?", arXiv:1801.04406, eq. 9);
- generator: the non-saturating loss, BCE of D(G(z)) against "real" (Goodfellow et al. 2014, sec. 3);
- or (`loss="hinge"`) the hinge losses of Lim & Ye 2017 (arXiv:1705.02894), optionally with spectral
  normalisation of the discriminator (Miyato et al. 2018, arXiv:1802.05957);
- optionally (`classes` > 0) class-conditional: the generator reads the class from its own z, as
  argmax z[:classes] (uniform over the classes, z's coordinates being iid N(0, 1)), and gets it as a
  one-hot next to z (Mirza & Osindero 2014, arXiv:1411.1784); the discriminator is a projection
  discriminator, logit = psi(phi(x)) + <embed(y), phi(x)> (Miyato & Koyama 2018, arXiv:1802.05637),
  shown the real labels and the generator's classes. The served generator is still z -> image;
- Adam with beta_1 = 0.5 (Radford et al. 2016, arXiv:1511.06434, sec. 4); the discriminator may have
  its own learning rate (the two time-scale update rule, Heusel et al. 2017, arXiv:1706.08500);
- optionally an exponential moving average of the generator's weights, which is what is sampled,
  evaluated and exported (Yazici et al. 2019, "The Unusual Effectiveness of Averaging in GAN
  Training", arXiv:1806.04498), with TensorFlow's warm-up decay min(decay, (1 + t) / (10 + t)).

    python -c "from genserve.training.gan_model import GANConfig, new_model; new_model(GANConfig()).summary()"
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from genserve.training.common import from_preset

IMAGE_SHAPE = (28, 28, 1)


@dataclass(frozen=True)
class GANConfig:
    """Model and training settings (defaults: the demo's recipe; `GAN_PRESETS["best"]`: the measured one)."""

    latent_dim: int = 100  # the TF tutorial's 100 (keras-io: 128)
    gen_filters: tuple[int, ...] = (128, 64)  # Dense -> 7x7xF0 -> Conv2DTranspose 4x4/2 -> 14x14xF1 -> 28x28x1
    disc_filters: tuple[int, ...] = (32, 64)  # one stride-2 Conv2D 4x4 per entry
    gen_batchnorm: bool = True  # BatchNormalization after the generator's hidden layers (Radford et al.)
    gen_refine: int = 0  # >0: a stride-1 Conv2DTranspose 4x4 with this many filters at 7x7 (TF tutorial)
    dropout: float = 0.3  # discriminator, after each convolution (the TF tutorial)
    learning_rate: float = 2e-4  # the generator's (and the discriminator's unless d_learning_rate)
    d_learning_rate: float | None = None  # two time-scale update rule: the discriminator's own rate
    beta_1: float = 0.5
    label_noise: float = 0.05
    r1_gamma: float = 0.0  # R1 gradient penalty weight on real images (0: off)
    loss: str = "bce"  # "bce" (non-saturating) or "hinge" (Lim & Ye 2017; Miyato et al. 2018)
    spectral_norm: bool = False  # spectral normalisation of the discriminator's weights (Miyato et al. 2018)
    classes: int = 0  # >0: class-conditional training, the class being argmax z[:classes] (module doc)
    ema_decay: float = 0.0  # generator weight averaging (0: off; then the raw generator is exported)
    monitor_samples: int = 0  # score this many digits of the exported generator after every epoch
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
        if self.loss not in ("bce", "hinge") or (self.loss == "hinge" and self.label_noise):
            raise ValueError(f"loss must be 'bce' or 'hinge' (hinge: label_noise 0), got {self.loss!r}")
        if not 0 <= self.classes <= self.latent_dim or self.classes == 1:
            raise ValueError(f"classes must be 0 (off) or in [2, latent_dim], got {self.classes}")
        if self.gen_refine < 0:
            raise ValueError(f"gen_refine must be >= 0, got {self.gen_refine}")
        if not 0 <= self.ema_decay < 1 or self.r1_gamma < 0 or self.monitor_samples < 0:
            raise ValueError("ema_decay must be in [0, 1), r1_gamma and monitor_samples >= 0")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "GANConfig":
        raw = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in known})


# Fields that decide the checkpoint's variables: a resume must keep them.
SHAPE_FIELDS = ("latent_dim", "gen_filters", "disc_filters", "gen_batchnorm", "gen_refine", "spectral_norm",
                "classes", "ema_decay")

# Named recipes for `genserve train gan --preset NAME` (explicit options still override them);
# docs/gan.md has the measurements behind "best".
GAN_PRESETS: dict[str, dict] = {
    "demo": {},
    "best": dict(disc_filters=(64, 128), dropout=0.0, label_noise=0.0, learning_rate=2e-4,
                 d_learning_rate=4e-4, ema_decay=0.999, monitor_samples=2000, epochs=30),
}
# "best" with the TF tutorial's generator width: ahead of "best" at equal steps, ~1.9x its CPU per step
GAN_PRESETS["wide"] = {**GAN_PRESETS["best"], "gen_filters": (256, 128)}
# "best", class-conditional (the class drawn from z; docs/gan.md, session 7)
GAN_PRESETS["conditional"] = {**GAN_PRESETS["best"], "classes": 10}


def preset(name: str, **overrides) -> GANConfig:
    """GANConfig of a named preset with `overrides` applied (ValueError names the known presets)."""
    return from_preset(GANConfig, GAN_PRESETS, "GAN", name, **overrides)


# ------------------------------------------------------------------------------------ model
class ClassOfLatent(layers.Layer):
    """z (B, latent) -> one-hot (B, classes) of argmax z[:, :classes]: a conditional generator's class,
    drawn by z itself, so the served signature stays z -> image."""

    def __init__(self, classes: int, **kwargs):
        super().__init__(**kwargs)
        self.classes = classes

    def call(self, z):
        return ops.one_hot(class_of_latent(z, self.classes), self.classes)

    def get_config(self):
        return {**super().get_config(), "classes": self.classes}


def class_of_latent(z, classes: int):
    """int (B,): argmax z[:, :classes]."""
    return ops.argmax(z[:, :classes], axis=-1)


def build_generator(cfg: GANConfig, name: str = "generator") -> keras.Model:
    """z (B, latent) -> images (B, 28, 28, 1) in [0, 1] (sigmoid output, like keras-io's DCGAN)."""
    f0, f1 = cfg.gen_filters
    z = keras.Input((cfg.latent_dim,), name="z")
    bn = cfg.gen_batchnorm
    x = z
    if cfg.classes:  # (B, latent + classes)
        x = layers.Concatenate(name="g_condition")([z, ClassOfLatent(cfg.classes, name="g_class")(z)])
    x = layers.Dense(7 * 7 * f0, use_bias=not bn, name="g_dense")(x)
    if bn:
        x = layers.BatchNormalization(name="g_dense_bn")(x)
    x = layers.LeakyReLU(0.2, name="g_dense_act")(x)
    x = layers.Reshape((7, 7, f0), name="g_reshape")(x)  # (B, 7, 7, F0)
    if cfg.gen_refine:  # TF's DCGAN tutorial: a stride-1 transposed convolution before upsampling
        x = layers.Conv2DTranspose(cfg.gen_refine, 4, padding="same", use_bias=not bn, name="g_refine")(x)
        if bn:
            x = layers.BatchNormalization(name="g_refine_bn")(x)  # (B, 7, 7, R)
        x = layers.LeakyReLU(0.2, name="g_refine_act")(x)
    x = layers.Conv2DTranspose(f1, 4, strides=2, padding="same", use_bias=not bn,
                               name="g_deconv1")(x)  # (B, 14, 14, F1)
    if bn:
        x = layers.BatchNormalization(name="g_deconv1_bn")(x)
    x = layers.LeakyReLU(0.2, name="g_deconv1_act")(x)
    images = layers.Conv2DTranspose(1, 4, strides=2, padding="same", activation="sigmoid",
                                    name="images")(x)  # (B, 28, 28, 1)
    return keras.Model(z, images, name=name)


def build_discriminator(cfg: GANConfig) -> keras.Model:
    """images (B, 28, 28, 1) in [0, 1] (and, when conditional, labels int (B,)) -> logit (B, 1) that
    the image is real (and of that class)."""
    images = keras.Input(IMAGE_SHAPE, name="images")
    x = images
    # Keras' wrapper divides the kernel by its largest singular value (one power iteration per training
    # call) and stores the result in the kernel
    norm = (lambda layer: layers.SpectralNormalization(layer, name=f"{layer.name}_sn")) if cfg.spectral_norm \
        else (lambda layer: layer)
    for i, filters in enumerate(cfg.disc_filters):
        x = norm(layers.Conv2D(filters, 4, strides=2, padding="same", name=f"d_conv{i + 1}"))(x)  # (B, 14, 14, F) ...
        x = layers.LeakyReLU(0.2, name=f"d_conv{i + 1}_act")(x)
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout, name=f"d_dropout{i + 1}")(x)
    x = layers.Flatten(name="d_flatten")(x)  # phi(x): (B, F)
    logit = norm(layers.Dense(1, name="logit"))(x)  # (B, 1)
    if not cfg.classes:
        return keras.Model(images, logit, name="discriminator")
    labels = keras.Input((), dtype="int32", name="labels")
    embedded = layers.Embedding(cfg.classes, x.shape[-1], name="d_class_embedding")(labels)  # (B, F)
    logit = layers.Add(name="d_projection")([logit, layers.Dot(axes=1, name="d_project")([embedded, x])])
    return keras.Model([images, labels], logit, name="discriminator")


def bce_with_logits(targets, logits):
    """Mean binary cross-entropy from logits: max(l, 0) - l t + log(1 + exp(-|l|))."""
    return ops.mean(ops.relu(logits) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits))))


class GAN(keras.Model):
    """Generator + discriminator (+ the averaged generator); `train_step` alternates one D and one G
    update per batch."""

    def __init__(self, cfg: GANConfig, **kwargs):
        super().__init__(name="gan", **kwargs)
        self.cfg = cfg
        self.generator = build_generator(cfg)
        self.discriminator = build_discriminator(cfg)
        self.ema_generator = build_generator(cfg, name="ema_generator") if cfg.ema_decay else None
        self.seed_generator = keras.random.SeedGenerator(cfg.seed)
        names = ("d_loss", "g_loss", "d_real", "d_fake") + (("r1",) if cfg.r1_gamma else ())
        # d_real / d_fake: mean D(x) on real images and mean D(G(z)) before the D step
        self.trackers = [keras.metrics.Mean(name=n) for n in names]

    @property
    def exported_generator(self) -> keras.Model:
        """The generator that is sampled, evaluated and exported: the averaged one when there is one."""
        return self.ema_generator if self.ema_generator is not None else self.generator

    def compile(self, d_optimizer, g_optimizer, **kwargs):
        super().compile(**kwargs)
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

    @property
    def metrics(self):
        return self.trackers

    def call(self, z, training=False):
        return self.generator(z, training=training)

    def _discriminate(self, images, labels):
        """D's logits (B, 1); `labels` (B,) is only read by a conditional discriminator."""
        inputs = [images, labels] if self.cfg.classes else images
        return self.discriminator(inputs, training=True)

    def _classes(self, z):
        """The conditional generator's classes of z (B,) (None when unconditional)."""
        return ops.cast(class_of_latent(z, self.cfg.classes), "int32") if self.cfg.classes else None

    def _d_loss(self, real, fake, batch, real_labels=None, fake_labels=None):
        noise, gamma = self.cfg.label_noise, self.cfg.r1_gamma
        real_targets = 1.0 - noise * keras.random.uniform((batch, 1), seed=self.seed_generator)
        fake_targets = noise * keras.random.uniform((batch, 1), seed=self.seed_generator)
        penalty = ops.zeros(())
        if gamma:
            with tf.GradientTape() as inner:
                inner.watch(real)
                real_logits = self._discriminate(real, real_labels)  # (B, 1)
                summed = ops.sum(real_logits)  # inside the tape: its gradient is d logit_i / d x_i per row
            grad = inner.gradient(summed, real)  # (B, 28, 28, 1)
            penalty = ops.mean(ops.sum(ops.square(grad), axis=(1, 2, 3)))
        else:
            real_logits = self._discriminate(real, real_labels)
        fake_logits = self._discriminate(fake, fake_labels)
        if self.cfg.loss == "hinge":  # E max(0, 1 - D(x)) + E max(0, 1 + D(G(z)))
            d_loss = ops.mean(ops.relu(1.0 - real_logits)) + ops.mean(ops.relu(1.0 + fake_logits))
        else:
            d_loss = bce_with_logits(real_targets, real_logits) + bce_with_logits(fake_targets, fake_logits)
        return d_loss, penalty, real_logits, fake_logits

    def train_step(self, data):
        # (B, 28, 28, 1) in [0, 1], and the labels (B,) when conditional
        real, labels = (data[0], data[1]) if isinstance(data, (tuple, list)) else (data, None)
        batch = ops.shape(real)[0]
        z = keras.random.normal((batch, self.cfg.latent_dim), seed=self.seed_generator)
        fake = self.generator(z, training=True)
        # 1) discriminator: real -> 1, fake -> 0 (+ R1 on the real images)
        with tf.GradientTape() as tape:
            d_loss, penalty, real_logits, fake_logits = self._d_loss(real, fake, batch, labels, self._classes(z))
            total = d_loss + 0.5 * self.cfg.r1_gamma * penalty
        grads = tape.gradient(total, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))
        # 2) generator: make D call fresh fakes real (non-saturating loss)
        z = keras.random.normal((batch, self.cfg.latent_dim), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            logits = self._discriminate(self.generator(z, training=True), self._classes(z))
            g_loss = -ops.mean(logits) if self.cfg.loss == "hinge" else bce_with_logits(ops.ones_like(logits), logits)
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))
        if self.ema_generator is not None:  # all weights, BatchNorm's moving statistics included
            t = ops.cast(self.g_optimizer.iterations, "float32")
            decay = ops.minimum(self.cfg.ema_decay, (1.0 + t) / (10.0 + t))
            for avg, w in zip(self.ema_generator.weights, self.generator.weights):
                avg.assign(decay * avg + (1.0 - decay) * ops.cast(w, avg.dtype))
        values = [d_loss, g_loss, ops.mean(ops.sigmoid(real_logits)), ops.mean(ops.sigmoid(fake_logits)),
                  penalty]
        for tracker, value in zip(self.trackers, values):
            tracker.update_state(value)
        return {m.name: m.result() for m in self.metrics}


def new_model(cfg: GANConfig) -> GAN:
    """A compiled, built GAN (weights and both optimizers' variables exist, so weights can load)."""
    keras.utils.set_random_seed(cfg.seed)
    model = GAN(cfg)
    adam = lambda lr: keras.optimizers.Adam(lr, beta_1=cfg.beta_1)  # noqa: E731
    model.compile(d_optimizer=adam(cfg.d_learning_rate or cfg.learning_rate), g_optimizer=adam(cfg.learning_rate))
    fake = model(np.zeros((1, cfg.latent_dim), np.float32))
    model.discriminator([fake, ops.zeros((1,), "int32")] if cfg.classes else fake)  # build the weights
    model.d_optimizer.build(model.discriminator.trainable_variables)
    model.g_optimizer.build(model.generator.trainable_variables)
    if model.ema_generator is not None:
        model.ema_generator.set_weights(model.generator.get_weights())
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
