"""Offline RL data: recording episodes to Parquet in the EnvRunners, and reading them back.

* :mod:`~lightning_rl.offline.schema`: the columns (``docs/offline_data_schema.md``);
* :mod:`~lightning_rl.offline.writer`: bounded, atomically published Parquet files;
* :mod:`~lightning_rl.offline.recorder`: the EnvRunner-side recorder (``output=`` setting);
* :mod:`~lightning_rl.offline.reader` and :mod:`~lightning_rl.offline.rows`: finding, checking and
  converting recorded data for :class:`~lightning_rl.data.offline.OfflineDataModule`.

Names are imported lazily: an EnvRunner actor that records needs the writer but must not pay
for importing tensordict (which only the readers use).
"""

from __future__ import annotations

from lightning_rl._imports import lazy_exports

_EXPORTS = {
    "EpisodeLayout": "lightning_rl.offline.schema",
    "OfflineDataError": "lightning_rl.offline.schema",
    "OutputConfig": "lightning_rl.offline.config",
    "ParquetFileWriter": "lightning_rl.offline.writer",
    "EpisodeRecorder": "lightning_rl.offline.recorder",
    "RecordingSpec": "lightning_rl.offline.recorder",
    "inspect_files": "lightning_rl.offline.reader",
    "read_files": "lightning_rl.offline.reader",
    "resolve_input_files": "lightning_rl.offline.reader",
    "OfflineRequirements": "lightning_rl.offline.rows",
    "RowConverter": "lightning_rl.offline.rows",
    "record_episodes": "lightning_rl.offline.record",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
