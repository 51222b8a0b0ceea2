"""The char-LSTM's settings: `TextConfig` (defaults: the book's 8.1 recipe plus genserve's fixes), the
workdir's file names, and the named presets of `genserve train text --preset NAME`.

    python -c "from genserve.training.text_config import preset; print(preset('best').to_json())"
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from genserve.training.common import (CONFIG_FILE, STATE_FILE, CheckpointError,  # noqa: F401
                                      config_for_run, from_preset)

VOCAB_FILE = "vocabulary.json"
BEST_FILE = "best.keras"
LAST_FILE = "last.keras"
HISTORY_FILE = "history.csv"
HISTORY_HEADER = "epoch,loss_nats,val_loss_nats,val_bits,learning_rate,seconds"
SCHEDULES = ("constant", "cosine", "plateau")
OPTIMIZERS = ("rmsprop", "adam", "adamw")


@dataclass(frozen=True)
class TextConfig:
    """Hyper-parameters; defaults are the book's (8.1) plus genserve's fixes."""

    corpus: str = "shakespeare"  # a name from genserve.data.text.NAMED_CORPORA or a file path
    lower: bool = True  # the book lower-cases the corpus
    max_chars: int | None = None  # keep only the first max_chars characters of the corpus
    # more training text: a corpus (name or path) whose text beyond `corpus` is trained on too; the
    # held-out split stays the last val_fraction of `corpus` (genserve.training.text_data)
    extra_train: str | None = None
    maxlen: int = 60  # window length
    step: int = 3  # stride between training windows
    val_step: int | None = None  # stride between validation windows (None: step); the book's measure: 3
    targets: str = "last"  # "last": one target per window (the book); "all": every position's next char
    units: int = 128  # LSTM units (per layer)
    layers: int = 1  # stacked LSTM layers (the book: 1)
    dropout: float = 0.0  # dropout after each LSTM layer while training (the book: none)
    recurrent_dropout: float = 0.0  # dropout on each LSTM's recurrent state (Gal & Ghahramani 2016)
    # "onehot" (the book's input, built inside the model from the ids; never a materialised array) or
    # "embedding"; one-hot was faster in 3 of 4 one-epoch runs (benchmarks/text_generation.py, docs/text.md)
    encoding: str = "onehot"
    embedding_dim: int = 32  # only for encoding="embedding"
    optimizer: str = "rmsprop"  # the book's; or "adam"
    learning_rate: float = 0.01  # RMSprop, as in the book
    weight_decay: float = 0.0  # decoupled weight decay, optimizer "adamw" only (Loshchilov & Hutter 2019)
    schedule: str = "constant"  # "constant" (the book), "cosine" (to min_lr_fraction over `epochs`), "plateau"
    warmup_epochs: int = 0  # linear warmup from lr / (warmup_epochs + 1) over the first epochs
    min_lr_fraction: float = 0.02  # floor of cosine/plateau as a fraction of learning_rate
    clipnorm: float = 1.0  # gradient-norm clipping; the book has none and diverges near epoch 57
    batch_size: int = 128
    epochs: int = 60  # the book loops 60 times over one epoch each
    val_fraction: float = 0.1  # contiguous tail of the corpus
    patience: int | None = None  # stop after this many epochs without a better val loss (None: never)
    seed: int = 1337

    def __post_init__(self):
        checks = [
            (self.layers >= 1, f"layers must be >= 1, got {self.layers}"),
            (self.targets in ("last", "all"), f"targets must be 'last' or 'all', got {self.targets!r}"),
            (self.units >= 1, f"units must be >= 1, got {self.units}"),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
            (0.0 <= self.recurrent_dropout < 1.0, f"recurrent_dropout must be in [0, 1), got {self.recurrent_dropout}"),
            (self.weight_decay == 0 or self.optimizer == "adamw",
             f"weight_decay needs optimizer 'adamw', got {self.optimizer!r}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}"),
            (self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}"),
            (0.0 <= self.min_lr_fraction <= 1.0, f"min_lr_fraction must be in [0, 1], got {self.min_lr_fraction}"),
            (self.patience is None or self.patience >= 1, f"patience must be >= 1, got {self.patience}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def state_size(self) -> int:
        """Width of the h (and c) tensor the step signature carries: layers * units."""
        return self.layers * self.units

    def epoch_learning_rate(self, epoch: int) -> float:
        """The scheduled learning rate of 0-based `epoch` (warmup, then constant or cosine).

        Cosine: lr * (f + (1 - f) * (1 + cos(pi * k / K)) / 2) over the K = epochs - warmup epochs
        after warmup (Loshchilov & Hutter 2017, "SGDR", eq. 5, one cycle, no restarts), f = min_lr_fraction.
        "plateau" starts from the constant rate; the callback lowers it (see `train`).
        """
        if epoch < self.warmup_epochs:
            return self.learning_rate * (epoch + 1) / (self.warmup_epochs + 1)
        if self.schedule != "cosine":
            return self.learning_rate
        span = max(self.epochs - self.warmup_epochs - 1, 1)
        k = min(epoch - self.warmup_epochs, span)
        f = self.min_lr_fraction
        return self.learning_rate * (f + (1.0 - f) * 0.5 * (1.0 + math.cos(math.pi * k / span)))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, data: str) -> "TextConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in json.loads(data).items() if k in fields})


# Named recipes (explicit options override them). "best" (measured in docs/text.md, issue 20): the 2 x 256
# LSTM of the earlier run overfitted 1,000,000 training characters (train 1.37 vs val 1.49 nats/char),
# so it trains on 4.4x more text (the rest of shakespeare-full; the held-out split stays the last 10 %
# of `corpus`) with lighter dropout, every position a target (windows 60 apart: one pass over the text
# per epoch), Adam, batch 64 (1.7x the characters per CPU-second of batch 32 here), cosine to 10 %.
# No recurrent dropout: it disables the fused LSTM kernel and costs several times more on a CPU.
TEXT_PRESETS: dict[str, dict] = {
    "book": {},
    "best": dict(extra_train="shakespeare-full", layers=2, units=256, dropout=0.1, targets="all", step=60,
                 val_step=3, batch_size=64, optimizer="adam", learning_rate=0.003, schedule="cosine",
                 min_lr_fraction=0.1, epochs=3, patience=2),
}


def preset(name: str, **overrides) -> TextConfig:
    """TextConfig of a named preset with `overrides` applied (ValueError names the known presets)."""
    return from_preset(TextConfig, TEXT_PRESETS, "text", name, **overrides)


def resolve_config(workdir, preset_name: str | None = None, resume: bool = False, **overrides) -> TextConfig:
    """The config of `genserve train text`: see genserve.training.common.config_for_run ("book" by default)."""
    return config_for_run(TextConfig, TEXT_PRESETS, "text", workdir, preset_name, resume, **overrides)
