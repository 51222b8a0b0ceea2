"""What every trainer's workdir shares: the file names of its config and state, and the one error type
for a checkpoint (or config/state file) that exists but cannot be used."""

from __future__ import annotations

CONFIG_FILE = "config.json"
STATE_FILE = "state.json"


class CheckpointError(ValueError):
    """A workdir file (checkpoint, state, config) is missing, unreadable or corrupt; the message says
    what to do."""


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
