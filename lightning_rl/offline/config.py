"""Recording settings, light enough to import everywhere (no pyarrow).

The algorithm checks its ``output``/``output_config`` settings here and turns them into a
:class:`~lightning_rl.offline.recorder.RecordingSpec` that travels to the EnvRunners with their
spec; that class lives next to the recorder it builds, so only a runner that records (and so
unpickles one) imports the Parquet writer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

from lightning_rl.errors import ConfigError, unknown_name_message


@dataclass
class OutputConfig:
    """How recorded episodes are written (``output_config`` keys; RLlib's ``output_max_*`` names).

    Args:
        max_rows_per_file: env steps per file at most.
        max_file_size: uncompressed bytes per file at most (the file on disk is smaller).
        row_group_bytes: rows buffered in memory before they go to disk as one row group;
            the bound on the writer's memory.
        compression: Parquet codec (``"zstd"``, ``"snappy"``, ``"lz4"``, ``"gzip"``, ``"none"``).
        file_prefix: file names start with it (then a unique id and a counter).
    """

    max_rows_per_file: int = 100_000
    max_file_size: int = 64 * 1024 * 1024
    row_group_bytes: int = 4 * 1024 * 1024
    compression: str = "zstd"
    file_prefix: str = "episodes"

    @classmethod
    def from_dict(cls, config: dict[str, Any] | None) -> OutputConfig:
        config = dict(config or {})
        names = [f.name for f in fields(cls)]
        for key in config:
            if key not in names:
                raise ConfigError(unknown_name_message("output_config key", key, names))
        out = cls(**config)
        for name in ("max_rows_per_file", "max_file_size", "row_group_bytes"):
            value = getattr(out, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"output_config[{name!r}] must be a positive integer, got {value!r}.")
        codecs = ["zstd", "snappy", "lz4", "gzip", "brotli", "none"]
        if str(out.compression).lower() not in codecs:
            raise ConfigError(unknown_name_message("output_config compression", str(out.compression), codecs))
        if not out.file_prefix or "/" in out.file_prefix or out.file_prefix.startswith("."):
            raise ConfigError(
                f"output_config['file_prefix'] must be a plain file-name prefix, got {out.file_prefix!r}."
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def check_output_settings(output: Any, output_config: dict[str, Any] | None, multi_agent: bool) -> None:
    """One clear error for unusable recording settings, before any runner starts."""
    if output is None:
        if output_config:
            raise ConfigError(
                "output_config is set but output is None; set output='path/' to record episodes."
            )
        return
    if not isinstance(output, str | os.PathLike) or not str(output):
        raise ConfigError(f"output must be a directory path, got {output!r}.")
    if multi_agent:
        raise ConfigError(
            "Recording episodes (output=...) supports single-agent envs; this env is multi-agent."
        )
    OutputConfig.from_dict(output_config)


def flush_runner_group(group: Any) -> list[str]:
    """Publish what every runner of ``group`` recorded so far; returns the files written.

    The algorithm calls this when ``fit`` ends: runners that outlive a ``fit`` (a ``TrainingRun``
    keeps them between iterations) would otherwise hold an iteration's recordings until the group
    stops, and a killed process would lose them; ``EnvRunnerGroup.stop()`` lets each actor
    publish the rest. An in-process runner publishes in ``stop()`` itself, so it is left alone
    here (fewer, larger files).
    """
    if group is None or group.is_local:
        return []
    import ray

    refs = [actor.flush_output.remote() for actor in group.actors() if actor is not None]
    return [path for path in ray.get(refs) if path]
