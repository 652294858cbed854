"""Checkpoint files that are never half-written: Lightning ``CheckpointIO`` with write-then-rename.

Kept apart from :mod:`lightning_rl.checkpoint_format` because it imports Lightning, which the
inference path (``Policy.from_checkpoint``) avoids.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from lightning_rl.errors import CheckpointError

TMP_MARKER = ".tmp-"  # ".<name>.tmp-<pid>": a save in progress, or one that was killed


class _RecordingWriter:
    """A file object for ``torch.save`` that remembers the first OSError of a write: torch's
    zip writer reports a failed write as ``unexpected pos ...`` without the reason."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.raw.write(data)
        except OSError as exc:
            if self.error is None:
                self.error = exc
            raise

    def flush(self) -> None:
        self.raw.flush()


def _write_error(path: Path, exc: OSError) -> CheckpointError:
    reason = exc.strerror or str(exc)
    code = f" ({errno.errorcode.get(exc.errno, exc.errno)})" if exc.errno else ""
    return CheckpointError(
        f"Could not write checkpoint {str(path)!r}: {reason}{code}. The previous checkpoint at that "
        "path (if any) is unchanged; free space or choose another directory."
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_temporary_files(directory: Path) -> list[Path]:
    """Delete ``.<name>.tmp-<pid>`` files left by saves whose process is gone (killed mid-write).

    Files of live processes (a save running right now) are kept. Returns what was removed.
    """
    removed = []
    try:
        candidates = list(directory.glob(f".*{TMP_MARKER}*"))
    except OSError:
        return removed
    for candidate in candidates:
        pid_text = candidate.name.rpartition(TMP_MARKER)[2]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue  # not ours, or a save in progress (this process's own included)
        try:
            candidate.unlink()
            removed.append(candidate)
        except OSError:
            continue
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes a temporary file, fsyncs it, then renames it.

    A crash or a kill during a save leaves the previous checkpoint untouched and no partial
    file under the checkpoint's name (Lightning's default writes in place); the temporary
    files of saves that were killed are removed by the next save into the same directory. A
    write that fails (disk full, quota, permissions) is one :class:`CheckpointError` naming the
    path and the operating system's reason, and the previous checkpoint stays. Loading turns a
    missing, truncated or foreign file into one :class:`CheckpointError` naming it. Remote
    paths (``s3://``...) fall back to Lightning's own IO.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _write_error(path, exc) from exc
        remove_stale_temporary_files(path.parent)
        tmp = path.with_name(f".{path.name}{TMP_MARKER}{os.getpid()}")
        try:
            with open(tmp, "wb") as raw:
                handle = _RecordingWriter(raw)
                try:
                    torch.save(checkpoint, handle)
                    raw.flush()
                    os.fsync(raw.fileno())
                except OSError as exc:
                    raise _write_error(path, exc) from exc
                except RuntimeError as exc:  # torch's zip writer hides the OSError behind its own
                    if handle.error is None:
                        raise
                    raise _write_error(path, handle.error) from exc
            os.replace(tmp, path)
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as exc:  # closing (flushing) the file, or the rename
            raise _write_error(path, exc) from exc
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
