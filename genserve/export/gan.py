"""Export a trained DCGAN as a SavedModel with `generate` (default) and `sample` signatures.

    genserve export gan --workdir runs/gan --models-dir models
    python -c "from genserve.export.gan import export_gan; print(export_gan('runs/gan', 'models'))"

`generate`: z (B, latent) float32 -> images (B, 28, 28, 1) in [0, 1]; the latent size is the static
last dimension of `z`, so a client reads it from GetModelMetadata.
`sample`: seed int64 (B,) -> images (B, 28, 28, 1) and the z drawn, (B, latent); the draw is
tf.random.stateless_normal([latent], seed=[seed, 0]) per row, made inside the graph, so a seed gives
the same digit on every load and server (see genserve.contract, GAN). Only the generator is saved;
`generate` rejects non-finite z in the graph (INVALID_ARGUMENT on any server). The training config and
state are written to assets.extra/ so the export documents what it came from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genserve import contract as C

DEFAULT_NAME = C.GAN.name


def build_module(generator, latent_dim: int):
    """A `tf.Module` tracking the generator, with one tf.function per signature.

    Args:
        generator: Keras model z (B, latent) -> images (B, 28, 28, 1).
        latent_dim: the latent size (the static last dimension of `z`).
    Returns:
        (module, signatures): signatures maps the contract's signature names to concrete functions.
    """
    import tensorflow as tf

    from genserve.export.writer import concrete_signatures, input_signature
    from genserve.training.gan import latent_from_seeds

    class GANModule(tf.Module):
        def __init__(self):
            super().__init__(name="gan")
            self.generator = generator  # the functional generator alone: no discriminator, no optimizer

        @tf.function(input_signature=input_signature(C.GAN_GENERATE, z=(None, latent_dim)))
        def generate(self, z):  # z: (B, latent)
            z = tf.debugging.assert_all_finite(z, "generate: z must be finite (no NaN or Inf)")
            return {"images": tf.cast(self.generator(z, training=False), tf.float32)}  # (B, 28, 28, 1)

        @tf.function(input_signature=input_signature(C.GAN_SAMPLE))
        def sample(self, seed):  # seed: (B,) int64
            z = latent_from_seeds(seed, latent_dim)  # (B, latent), stateless
            images = self.generator(z, training=False)  # (B, 28, 28, 1)
            return {"images": tf.cast(images, tf.float32), "z": z}

    module = GANModule()
    return module, concrete_signatures(module, C.GAN_GENERATE, C.GAN_SAMPLE)


def warmup_requests(latent_dim: int) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Requests replayed at load time: a 10x10 grid of seeds (the common case), one z, a 10-step strip."""
    return [
        (C.GAN_SAMPLE.name, {"seed": np.arange(100, dtype=np.int64)}),
        (C.GAN_SAMPLE.name, {"seed": np.zeros((2,), np.int64)}),
        (C.GAN_GENERATE.name, {"z": np.zeros((10, latent_dim), np.float32)}),
    ]


def export_gan(workdir: str | Path, models_dir: str | Path, name: str = DEFAULT_NAME,
               version: int | None = None) -> Path:
    """Export a training workdir's last (verified) checkpoint to `<models_dir>/<name>/<version>/`.

    Args:
        workdir: a training workdir (config.json, state.json and the checkpoint it names).
        models_dir: the serving root (TF Serving layout); models.config is rewritten.
        name: the served model name.
        version: explicit version; default the next free one.
    Returns:
        The version directory written.
    Raises:
        genserve.training.gan.CheckpointError: no usable checkpoint (missing or corrupt).
        genserve.export.writer.ExportError: bad name or an existing version.
    """
    from genserve.export.writer import BATCHABLE_FIXED_SHAPE, save_version
    from genserve.training.gan import CONFIG_FILE, STATE_FILE, load_generator

    workdir = Path(workdir)
    cfg, generator = load_generator(workdir)
    module, signatures = build_module(generator, cfg.latent_dim)
    assets = {CONFIG_FILE: cfg.to_json().encode("utf-8"), STATE_FILE: (workdir / STATE_FILE).read_bytes()}
    return save_version(module, models_dir, name, signatures, default=C.GAN_GENERATE.name,
                        version=version, warmup=warmup_requests(cfg.latent_dim), assets=assets,
                        batching=BATCHABLE_FIXED_SHAPE)  # shapes are fixed past dim 0
