"""Checkpoint files that are never half-written: Lightning ``CheckpointIO`` with write-then-rename.

Kept apart from :mod:`lightning_rl.checkpoint` because it imports Lightning, which the
inference path (``Policy.from_checkpoint``) avoids.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from lightning_rl.errors import CheckpointError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes a temporary file, fsyncs it, then renames it.

    A crash or a kill during a save leaves the previous checkpoint untouched and no partial
    file under the checkpoint's name (Lightning's default writes in place). Loading turns a
    missing, truncated or foreign file into one :class:`CheckpointError` naming it. Remote
    paths (``s3://``...) fall back to Lightning's own IO.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        finally:
            tmp.unlink(missing_ok=True)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        kwargs: dict[str, Any] = {"weights_only": weights_only}
        if map_location is not None:
            kwargs["map_location"] = map_location
        if "://" in str(path):
            return super().load_checkpoint(path, **kwargs)
        if not Path(path).is_file():
            raise CheckpointError(f"Checkpoint {str(path)!r} does not exist.")
        try:
            return super().load_checkpoint(path, **kwargs)
        except Exception as exc:
            raise CheckpointError(
                f"Checkpoint {str(path)!r} is corrupt or truncated and cannot be read: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
