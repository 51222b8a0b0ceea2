"""What every trainer's workdir shares: the file names of its config and state, and the one error type
for a checkpoint (or config/state file) that exists but cannot be used."""

from __future__ import annotations

CONFIG_FILE = "config.json"
STATE_FILE = "state.json"


class CheckpointError(ValueError):
    """A workdir file (checkpoint, state, config) is missing, unreadable or corrupt; the message says
    what to do."""
