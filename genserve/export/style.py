"""Export the style-transfer loss as a SavedModel with `step` (default) and `targets` signatures.

    genserve export style --backbone vgg16-offline --models-dir models
    python -c "from genserve.export.style import export_style; from genserve.training.style import StyleConfig; print(export_style(StyleConfig(backbone='random-small'), 'models'))"

`targets`: content_image (B, H, W, 3) and style_image (B, H', W', 3), RGB floats 0..255 of any size
-> content_features (B, h, w, C) and one gram_<layer> (B, C_l, C_l) per style layer. Called once per job.
`step`: image (B, H, W, 3) + those targets -> loss, content_loss, style_loss, tv_loss (B,) and the
gradient d loss / d image (B, H, W, 3): one L-BFGS evaluation. VGG preprocessing is inside the graph.
The loss config (backbone, layers, weights) is written to assets.extra/config.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from genserve import contract as C
from genserve.export.writer import config_asset, read_config_asset, save_version
from genserve.training.style import StyleConfig, build_model, compute_targets, loss_and_gradient

WARMUP_SIZE = (32, 48)  # (H, W) of the warmup requests: small, so loading stays fast


class StyleModule(tf.Module):
    """Tracks the frozen feature extractor and exposes the two serving functions."""

    def __init__(self, cfg: StyleConfig, extractor=None):
        super().__init__(name="style")
        self._cfg = cfg
        self.extractor = extractor if extractor is not None else build_model(cfg)
        self._min_side = min_side(self.extractor)

    def _check_size(self, images, key: str):
        """images (B, H, W, 3), passed through once H and W >= the backbone's minimum (INVALID_ARGUMENT
        otherwise, on any server: the check is in the graph)."""
        check = tf.debugging.assert_greater_equal(
            tf.shape(images)[1:3], tf.constant(self._min_side, tf.int32),
            message=f"{key}: height and width must be at least {self._min_side} px "
                    f"(the backbone pools the image {self._min_side.bit_length() - 1} times)")
        with tf.control_dependencies([check]):
            return tf.identity(images)

    @tf.function
    def targets(self, content_image, style_image):
        """(B, H, W, 3), (B, H', W', 3) RGB 0..255 -> {content_features, gram_<layer>...}."""
        content_image = self._check_size(content_image, "content_image")
        style_image = self._check_size(style_image, "style_image")
        t = compute_targets(self.extractor, self._cfg, content_image, style_image)
        out = {C.STYLE_CONTENT_FEATURES: t["content"]}  # (B, h, w, C)
        for layer in self._cfg.style_layers:
            out[C.style_gram_key(layer)] = t[layer]  # (B, C_l, C_l)
        return out

    @tf.function
    def step(self, **inputs):
        """{image (B, H, W, 3), content_features, gram_<layer>...} -> losses (B,) and gradient."""
        targets = {"content": inputs[C.STYLE_CONTENT_FEATURES]}
        for layer in self._cfg.style_layers:
            targets[layer] = inputs[C.style_gram_key(layer)]
        image = self._check_size(inputs["image"], "image")
        parts, gradient = loss_and_gradient(self.extractor, self._cfg, image, targets)
        return {**parts, "gradient": gradient}  # gradient: (B, H, W, 3)

    def gram_channels(self) -> dict[str, int]:
        """Channels C_l of each style layer (the Gram matrices are C_l x C_l)."""
        return {layer: int(self.extractor.get_layer(layer).output.shape[-1]) for layer in self._cfg.style_layers}


def min_side(extractor) -> int:
    """The smallest height/width the feature extractor accepts: 2 ** (pooling layers it keeps), since
    each 2x2/stride-2 'valid' pool halves (rounding down) and a side of 0 leaves no features
    (VGG up to block5_conv2: 4 pools -> 16 px)."""
    import keras

    pools = sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in extractor.layers)
    return 2 ** pools


def check_weights(cfg: StyleConfig) -> None:
    """Loss weights must be finite and >= 0 (NaN/Inf make every loss NaN; a negative weight rewards
    the opposite of what the term measures), tv_exponent finite and > 0.

    Raises:
        ValueError: naming the option.
    """
    import math

    for key in ("content_weight", "style_weight", "tv_weight"):
        value = getattr(cfg, key)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{key.replace('_', '-')} must be a finite number >= 0, got {value!r}")
    if not (math.isfinite(cfg.tv_exponent) and cfg.tv_exponent > 0):
        raise ValueError(f"tv-exponent must be a finite number > 0, got {cfg.tv_exponent!r}")


def signatures(module: StyleModule) -> dict:
    """Concrete functions for `targets` and `step`, inputs named by the contract, H and W dynamic."""
    from genserve.export.writer import input_signature

    cfg = module._cfg
    target_inputs = {spec.name: spec for spec in input_signature(C.STYLE_TARGETS)}
    step_inputs = {spec.name: spec for spec in input_signature(C.STYLE_STEP)}
    channels = module.gram_channels()
    for layer in cfg.style_layers:  # one Gram input per style layer, beyond the contract's fixed keys
        key = C.style_gram_key(layer)
        step_inputs[key] = tf.TensorSpec((None, channels[layer], channels[layer]), tf.float32, name=key)
    return {
        C.STYLE_STEP.name: module.step.get_concrete_function(**step_inputs),
        C.STYLE_TARGETS.name: module.targets.get_concrete_function(**target_inputs),
    }


def warmup_requests(module: StyleModule, size: tuple[int, int] = WARMUP_SIZE) -> list:
    """One `targets` and one `step` request on a small random image, for TF Serving's warmup file."""
    rng = np.random.default_rng(0)
    content = rng.uniform(0, 255, (1, *size, 3)).astype(np.float32)  # (1, H, W, 3)
    style = rng.uniform(0, 255, (1, *size, 3)).astype(np.float32)
    targets = {k: v.numpy() for k, v in module.targets(tf.constant(content), tf.constant(style)).items()}
    return [(C.STYLE_TARGETS.name, {"content_image": content, "style_image": style}),
            (C.STYLE_STEP.name, {"image": content, **targets})]


def export_style(cfg: StyleConfig, models_dir, name: str = C.STYLE.name, version: int | None = None,
                 warmup: bool = True, extractor=None) -> Path:
    """Build the loss model from `cfg.backbone` and write it as a new version of `name`.

    Args:
        cfg: the loss config; its backbone decides where the weights come from.
        models_dir: the served tree (<models_dir>/<name>/<version>/).
        version: explicit version; None = the next one.
        warmup: also write TF Serving's warmup requests.
        extractor: an already built `build_model(cfg)` to reuse (default: build one).

    Returns:
        the version folder.

    Raises:
        ValueError: a non-finite or negative loss weight (check_weights).
        genserve.data.DataError: backbone weights cannot be obtained.
        genserve.export.writer.ExportError: the version exists or the name is invalid.
    """
    check_weights(cfg)
    module = StyleModule(cfg, extractor)
    config = json.loads(cfg.to_json())
    config["gram_channels"] = module.gram_channels()
    config["min_side"] = module._min_side
    config["preprocessing"] = "keras vgg caffe: RGB->BGR, minus ImageNet BGR mean, inside the graph"
    return save_version(module, models_dir, name, signatures(module), default=C.STYLE_STEP.name,
                        version=version, warmup=warmup_requests(module) if warmup else None,
                        assets=config_asset(config))


def load_config(version_dir) -> StyleConfig:
    """The StyleConfig an export was built with (from assets.extra/config.json)."""
    return StyleConfig.from_json(read_config_asset(version_dir))
