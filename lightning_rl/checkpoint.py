"""Checkpoint format versioning: stamp what we write, check (and migrate) what we read.

Every checkpoint carries ``checkpoint["lightning_rl"] = {"format_version", "package_version",
"algorithm", ...}`` and holds only plain data (tensors, numbers, strings, lists, dicts), so
``torch.load(path, weights_only=True)`` opens it without trusting pickled classes. A newer
format than this package knows fails with one clear message; older formats pass through
the migrations below, one version step at a time.

Format history (bump :data:`FORMAT_VERSION` and add a migration whenever a reader would
otherwise have to guess):

1. The ``lightning_rl`` section: format and package version, ``algorithm`` (registry name),
   ``policy_ids`` and ``connector_state`` (``{policy_id: [state per env-to-module connector]}``).
2. ``inference``: ``{policy_id: recipe}``, the plain-data recipe of each policy (env-side
   spaces, connector specs, inference-policy class and kwargs, weight keys), so
   :meth:`lightning_rl.Policy.from_checkpoint` needs no env. A recipe needs the env to be
   derived, so format-1 checkpoints migrate to an empty ``inference`` and their policies are
   rebuilt from the hyperparameters (which creates the env once).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lightning_rl.errors import CheckpointError
from lightning_rl.version import __version__

FORMAT_VERSION = 2
KEY = "lightning_rl"


def _add_inference_section(checkpoint: dict[str, Any]) -> None:
    checkpoint[KEY].setdefault("inference", {})


# MIGRATIONS[v] turns a format-v checkpoint into format v + 1, in place.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], None]] = {1: _add_inference_section}


def stamp(checkpoint: dict[str, Any], **extra: Any) -> None:
    checkpoint[KEY] = {"format_version": FORMAT_VERSION, "package_version": __version__, **extra}


def check_and_migrate(checkpoint: dict[str, Any], source: str = "checkpoint") -> dict[str, Any]:
    """Return the lightning-rl section of ``checkpoint``, migrated to the current format."""
    section = checkpoint.get(KEY)
    if not isinstance(section, dict):
        raise CheckpointError(
            f"{source} was not written by lightning-rl (no {KEY!r} section); "
            "it cannot be restored as an algorithm."
        )
    raw_version = section.get("format_version", 0)
    if isinstance(raw_version, bool) or not isinstance(raw_version, int):
        raise CheckpointError(f"{source} has an invalid checkpoint format version {raw_version!r}.")
    version = raw_version
    written_by = section.get("package_version", "an unknown version")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{source} has checkpoint format {version} (written by lightning-rl "
            f"{written_by}), but this lightning-rl {__version__} reads "
            f"formats up to {FORMAT_VERSION}. Upgrade lightning-rl to load it."
        )
    while version < FORMAT_VERSION:
        migrate = MIGRATIONS.get(version)
        if migrate is None:
            raise CheckpointError(
                f"{source} has checkpoint format {version} (written by lightning-rl {written_by}), "
                f"which this lightning-rl {__version__} cannot migrate to format {FORMAT_VERSION} "
                f"(it migrates formats {', '.join(map(str, sorted(MIGRATIONS)))} and newer). Load it "
                f"with lightning-rl {written_by} and export the policy, or retrain."
            )
        migrate(checkpoint)
        version += 1
        checkpoint[KEY]["format_version"] = version
    return checkpoint[KEY]


def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint file, or the last ``*.ckpt`` (by name) in a directory."""
    path = Path(path)
    if path.is_dir():
        candidates = sorted(path.glob("*.ckpt"))
        if not candidates:
            raise CheckpointError(f"No checkpoint (*.ckpt) found in directory {str(path)!r}.")
        path = candidates[-1]
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint file with ``weights_only=True``; a missing, truncated or foreign file
    gives a :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {str(path)!r} does not exist.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise CheckpointError(
                f"Checkpoint {str(path)!r} is corrupt or truncated and cannot be read: {exc}"
            ) from exc
        detail = next((line.strip() for line in str(exc).splitlines() if "Unsupported global" in line), "")
        raise CheckpointError(
            f"Checkpoint {str(path)!r} holds pickled Python objects, not plain data; lightning-rl loads "
            f"checkpoints only with torch.load(weights_only=True). {detail}"
        ) from exc
    except Exception as exc:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} is corrupt or truncated and cannot be read: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"Checkpoint {str(path)!r} does not hold a checkpoint dict.")
    check_and_migrate(checkpoint, source=f"Checkpoint {str(path)!r}")
    return checkpoint
