"""Export a trained VAE as a SavedModel with `decode` (default) and `encode` signatures.

    genserve export vae --workdir runs/vae --models-dir models
    python -c "from genserve.export.vae import export_vae; print(export_vae('runs/vae', 'models'))"

`decode`: z (B, latent) float32 -> images (B, 28, 28, 1) in [0, 1]. The latent size is fixed in the
signature, so a client reads it from GetModelMetadata (the shape of `z`); no side file is needed.
`encode`: images (B, 28, 28, 1) in [0, 1] -> z_mean, z_log_var (B, latent): the parameters of q(z|x).
Both reject non-finite inputs in the graph (INVALID_ARGUMENT on any server). The training config is
written to assets.extra/config.json so the export rebuilds from disk alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genserve import contract as C

DEFAULT_NAME = C.VAE.name


def build_module(encoder, decoder, latent_dim: int):
    """A `tf.Module` tracking the encoder and decoder layers, with one tf.function per signature.

    Args:
        encoder: Keras model images (B, 28, 28, 1) -> [z_mean, z_log_var].
        decoder: Keras model z (B, latent) -> images (B, 28, 28, 1).
        latent_dim: the latent size (becomes the static last dimension of `z`).

    Returns:
        (module, signatures): signatures maps the contract's signature names to concrete functions.
    """
    import tensorflow as tf

    from genserve.export.writer import concrete_signatures, input_signature

    class VAEModule(tf.Module):
        def __init__(self):
            super().__init__(name="vae")
            # The uncompiled functional sub-models: their layers' variables, no optimizer state.
            self.encoder, self.decoder = encoder, decoder

        @tf.function(input_signature=input_signature(C.VAE_DECODE, z=(None, latent_dim)))
        def decode(self, z):  # z: (B, latent)
            z = tf.debugging.assert_all_finite(z, "decode: z must be finite (no NaN or Inf)")
            images = self.decoder(z, training=False)  # (B, 28, 28, 1) in [0, 1]
            return {"images": tf.cast(images, tf.float32)}

        @tf.function(input_signature=input_signature(C.VAE_ENCODE))
        def encode(self, images):  # images: (B, 28, 28, 1)
            images = tf.debugging.assert_all_finite(images, "encode: images must be finite")
            z_mean, z_log_var = self.encoder(images, training=False)  # (B, latent) each
            return {"z_mean": tf.cast(z_mean, tf.float32), "z_log_var": tf.cast(z_log_var, tf.float32)}

    module = VAEModule()
    return module, concrete_signatures(module, C.VAE_DECODE, C.VAE_ENCODE)


def warmup_requests(latent_dim: int) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Small requests replayed at load time: a 15x15 grid's worth of z (the common case) and one image."""
    return [
        (C.VAE_DECODE.name, {"z": np.zeros((225, latent_dim), np.float32)}),
        (C.VAE_DECODE.name, {"z": np.zeros((1, latent_dim), np.float32)}),
        (C.VAE_ENCODE.name, {"images": np.zeros((1, 28, 28, 1), np.float32)}),
    ]


def export_vae(workdir: str | Path, models_dir: str | Path, name: str = DEFAULT_NAME,
               version: int | None = None, which: str = "best") -> Path:
    """Export a training workdir's checkpoint to `<models_dir>/<name>/<version>/`.

    Args:
        workdir: a training workdir (config.json and the best/last weights).
        models_dir: the serving root (TF Serving layout); models.config is rewritten.
        name: the served model name.
        version: explicit version; default the next free one.
        which: "best" (lowest validation loss) or "last" checkpoint.

    Returns:
        The version directory written.

    Raises:
        FileNotFoundError: the workdir holds no config or checkpoint.
        genserve.export.writer.ExportError: bad name or an existing version.
    """
    from genserve.export.writer import BATCHABLE_FIXED_SHAPE, save_version
    from genserve.training.vae import CONFIG_FILE, STATE_FILE, load_trained

    workdir = Path(workdir)
    cfg, encoder, decoder = load_trained(workdir, which)
    module, signatures = build_module(encoder, decoder, cfg.latent_dim)
    assets = {CONFIG_FILE: cfg.to_json().encode("utf-8")}
    if (workdir / STATE_FILE).exists():
        assets[STATE_FILE] = (workdir / STATE_FILE).read_bytes()
    return save_version(module, models_dir, name, signatures, default=C.VAE_DECODE.name,
                        version=version, warmup=warmup_requests(cfg.latent_dim), assets=assets,
                        batching=BATCHABLE_FIXED_SHAPE)  # decode/encode shapes are fixed past dim 0
