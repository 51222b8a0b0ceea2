"""Training, one module per model family (config dataclass, build_model, train with checkpoints).

    genserve train vae --workdir runs/vae --epochs 1
"""

from __future__ import annotations

import dataclasses
import json


class CheckpointError(ValueError):
    """A workdir file (checkpoint, state, config) is missing, unreadable or corrupt; the message names
    it and says what to do. The one class every family raises (vae, text, gan, style)."""


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


class JsonConfig:
    """Mixin for a frozen config dataclass saved as config.json beside its checkpoints and exports."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str):
        """The config a `to_json` text spells; unknown keys are ignored, JSON lists become tuples.

        Raises:
            ValueError, TypeError, AttributeError: not a JSON object of this config's fields.
        """
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: _tuples(v) for k, v in data.items() if k in known})
