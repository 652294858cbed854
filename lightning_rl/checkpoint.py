"""Checkpoint format versioning: stamp what we write, check (and migrate) what we read.

Every checkpoint carries ``checkpoint["lightning_rl"] = {"format_version", "package_version",
"algorithm", ...}`` and holds only plain data (tensors, numbers, strings, lists, dicts), so
``torch.load(path, weights_only=True)`` opens it without trusting pickled classes. A newer
format than this package knows fails with one clear message; older formats pass through
the migrations below.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lightning_rl.errors import CheckpointError
from lightning_rl.version import __version__

FORMAT_VERSION = 1
KEY = "lightning_rl"

# MIGRATIONS[v] turns a format-v checkpoint into format v + 1, in place.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], None]] = {}


def stamp(checkpoint: dict[str, Any], **extra: Any) -> None:
    checkpoint[KEY] = {"format_version": FORMAT_VERSION, "package_version": __version__, **extra}


def check_and_migrate(checkpoint: dict[str, Any], source: str = "checkpoint") -> dict[str, Any]:
    """Return the lightning-rl section of ``checkpoint``, migrated to the current format."""
    section = checkpoint.get(KEY)
    if section is None:
        raise CheckpointError(
            f"{source} was not written by lightning-rl (no {KEY!r} section); "
            "it cannot be restored as an algorithm."
        )
    version = int(section.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{source} has checkpoint format {version} (written by lightning-rl "
            f"{section.get('package_version', '?')}), but this lightning-rl {__version__} reads "
            f"formats up to {FORMAT_VERSION}. Upgrade lightning-rl to load it."
        )
    while version < FORMAT_VERSION:
        migrate = MIGRATIONS.get(version)
        if migrate is None:
            raise CheckpointError(
                f"{source} has checkpoint format {version}, which cannot be migrated to {FORMAT_VERSION}."
            )
        migrate(checkpoint)
        version += 1
        checkpoint[KEY]["format_version"] = version
    return checkpoint[KEY]


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint file with ``weights_only=True``; a missing, truncated or foreign file
    gives a :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {str(path)!r} does not exist.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} is corrupt or truncated and cannot be read: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"Checkpoint {str(path)!r} does not hold a checkpoint dict.")
    check_and_migrate(checkpoint, source=f"Checkpoint {str(path)!r}")
    return checkpoint
