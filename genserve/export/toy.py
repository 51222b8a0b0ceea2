"""A tiny example model, y = w * x + b with two signatures, used by the serving tests and the demo.

    genserve export toy --models-dir models --bias 1

Signatures (genserve.contract.TOY): "affine" (the default, also "serving_default") maps x (B, 1) to
y = w*x + b and wx = w*x; "scale" maps x (B, 1) and an int32 factor (B,) to y = factor * w * x.
Giving each exported version a different bias makes it obvious which version answered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genserve.contract import TOY, TOY_AFFINE, TOY_SCALE


@dataclass(frozen=True)
class ToyConfig:
    """The toy model's parameters."""

    weight: float = 2.0
    bias: float = 1.0

    def __post_init__(self) -> None:
        for key in ("weight", "bias"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"toy {key} must be a finite number, got {value!r}")


def build_toy(cfg: ToyConfig = ToyConfig()):
    """A tf.Module with `affine` and `scale` tf.functions (input signatures from the contract).

    Returns:
        (module, {signature name: ConcreteFunction}) ready for `save_version`.
    """
    import tensorflow as tf

    from genserve.export.writer import concrete_signatures, input_signature

    class Toy(tf.Module):
        def __init__(self):
            super().__init__(name="toy")
            self.w = tf.Variable(cfg.weight, dtype=tf.float32, name="w")
            self.b = tf.Variable(cfg.bias, dtype=tf.float32, name="b")

        @tf.function(input_signature=input_signature(TOY_AFFINE))
        def affine(self, x):  # x: (B, 1)
            wx = self.w * x  # (B, 1)
            return {"y": wx + self.b, "wx": wx}

        @tf.function(input_signature=input_signature(TOY_SCALE))
        def scale(self, x, factor):  # x: (B, 1), factor: (B,)
            f = tf.cast(factor, tf.float32)[:, None]  # (B, 1)
            return {"y": f * self.w * x}  # (B, 1)

    module = Toy()
    return module, concrete_signatures(module, TOY_AFFINE, TOY_SCALE)


def export_toy(models_dir, cfg: ToyConfig = ToyConfig(), name: str = TOY.name,
               version: int | None = None, warmup: bool = True) -> Path:
    """Export the toy model as the next (or the given) version of `name` under `models_dir`.

    Returns:
        The version folder written.
    Raises:
        genserve.export.writer.ExportError: e.g. the version already exists.
    """
    from genserve.export.writer import BATCHABLE_FIXED_SHAPE, save_version

    module, signatures = build_toy(cfg)
    x = np.array([[1.0], [2.0]], np.float32)  # (2, 1)
    requests = [
        (TOY_AFFINE.name, {"x": x}),
        (TOY_SCALE.name, {"x": x, "factor": np.array([1, 3], np.int32)}),
    ] if warmup else None
    return save_version(module, models_dir, name, signatures, default=TOY.default.name,
                        version=version, warmup=requests, batching=BATCHABLE_FIXED_SHAPE)
