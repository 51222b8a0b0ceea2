"""What every trainer's workdir shares: the file names of its config and state, the one error type
for a checkpoint (or config/state file) that exists but cannot be used, the config.json mixin, and the
preset / resume rules."""

from __future__ import annotations

import dataclasses
import json

CONFIG_FILE = "config.json"
STATE_FILE = "state.json"


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


def from_preset(config_class, presets: dict[str, dict], kind: str, name: str, **overrides):
    """`config_class` built from the named entry of `presets`, with `overrides` on top.

    Raises:
        ValueError: an unknown name (the message lists the known ones) or a bad value.
    """
    if name not in presets:
        raise ValueError(f"unknown {kind} preset {name!r}; known: {', '.join(presets)}")
    return config_class(**{**presets[name], **overrides})


def config_for_run(config_class, presets: dict[str, dict], kind: str, workdir, preset_name: str | None,
                   resume: bool, **overrides):
    """The config of a training run: on `resume`, the workdir's config.json (when readable; the trainer
    reports a damaged one); otherwise the named preset (default: the first, the plain defaults); then
    `overrides`, the options a user gave explicitly, on top. `config_class` has `from_json`."""
    import dataclasses
    from pathlib import Path

    path = Path(workdir) / CONFIG_FILE
    if resume and path.is_file():
        try:
            return dataclasses.replace(config_class.from_json(path.read_text(encoding="utf-8")), **overrides)
        except (OSError, UnicodeDecodeError, ValueError, TypeError):
            pass
    return from_preset(config_class, presets, kind, preset_name or next(iter(presets)), **overrides)


def progress_callbacks(verbose, progress, *trainer_callbacks) -> list:
    """`fit`'s callbacks: the trainer's own between two that report the run's progress through
    genserve.progress (never Keras's ANSI bar, which also lands in log files). The first erases a
    terminal bar before the trainer prints its epoch summary line; the last records the epoch as done
    once the trainer's callbacks (its checkpoint) are through.

    Args:
        verbose: None: a bar on a terminal, plain lines elsewhere; 0: nothing (counting still works);
            1 or 2: report.
        progress: a genserve.progress.TrainingProgress to report to (the CLI keeps it to say where a
            Ctrl-C stopped the run), or None for a new one.
    """
    import keras

    from genserve.progress import TrainingProgress

    if progress is None:
        progress = TrainingProgress(enabled=verbose != 0)

    class _Report(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            progress.epoch_begin(epoch, self.params.get("epochs"), self.params.get("steps"))

        def on_train_batch_end(self, batch, logs=None):
            progress.step_end(batch + 1, logs)

        def on_epoch_end(self, epoch, logs=None):
            progress.epoch_end()

    class _Done(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            progress.epoch_done(epoch)

    return [_Report(), *trainer_callbacks, _Done()]
