"""Training, one module per model family (config dataclass, build_model, train with checkpoints).

    genserve train vae --workdir runs/vae --epochs 1
"""

from genserve.training.common import CheckpointError, JsonConfig  # noqa: F401 (the package's public names)
