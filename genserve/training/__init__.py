"""Training, one module per model family (config dataclass, build_model, train with checkpoints).

    genserve train vae --workdir runs/vae --epochs 1
"""


class CheckpointError(ValueError):
    """A workdir file (checkpoint, state, config) is missing, unreadable or corrupt; the message names
    it and says what to do. The one class every family raises (vae, text, gan, style)."""
