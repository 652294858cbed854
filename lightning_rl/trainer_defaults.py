"""Trainer defaults that the CLI and TrainingRun add, and plain Trainer users can opt into."""

from __future__ import annotations

from typing import Any

from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

from lightning_rl.atomic_checkpoint_io import AtomicCheckpointIO
from lightning_rl.callbacks import CheckpointOnInterrupt


def add_resilience_defaults(
    configured: list[Any], callbacks: list[Any], plugins: Any
) -> tuple[list[Any], Any]:
    """Atomic checkpoint writes and a checkpoint on SIGTERM/SIGINT, unless already configured.

    ``configured`` are the callbacks the user gave; ``callbacks`` the list to extend.
    """
    if not any(isinstance(c, CheckpointOnInterrupt) for c in configured):
        callbacks = [*callbacks, CheckpointOnInterrupt()]
    plugin_list = [] if plugins is None else list(plugins) if isinstance(plugins, list | tuple) else [plugins]
    if not any(isinstance(p, CheckpointIO) for p in plugin_list):
        plugin_list.append(AtomicCheckpointIO())
    return callbacks, plugin_list
