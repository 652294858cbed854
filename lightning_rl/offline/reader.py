"""Finding, checking and reading recorded episode files.

``input_`` may be a file, a directory (every ``*.parquet`` below it), a glob pattern, or a
list of those. Hidden files and the writer's temporary files are never listed, so a file
that is still being written (or whose writer died) is invisible; a partial file named
explicitly fails with a clear error instead of being half-read. Every file's schema is
checked against the env's spaces before any data is read, so a wrong file is named at once
rather than failing deep inside training.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_rl.offline.arrow import pa, pq
from lightning_rl.offline.schema import EpisodeLayout, OfflineDataError, check_schema
from lightning_rl.offline.writer import PARQUET_SUFFIX

_GLOB_CHARS = set("*?[")


def is_path_input(value: Any) -> bool:
    """A path, glob or list of them (what can live in hyperparameters), not in-memory data."""
    if isinstance(value, str | os.PathLike):
        return True
    return (
        isinstance(value, list | tuple)
        and bool(value)
        and all(isinstance(v, str | os.PathLike) for v in value)
    )


def resolve_input_files(input_: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The Parquet files ``input_`` names, sorted; one clear error for anything missing."""
    items = [input_] if isinstance(input_, str | os.PathLike) else list(input_)
    if not items:
        raise OfflineDataError("The offline input is an empty list; pass a directory, file or glob.")
    files: list[str] = []
    for item in items:
        text = os.fspath(item)
        path = Path(text).expanduser()
        if any(c in text for c in _GLOB_CHARS):
            found = [
                p for p in sorted(glob.glob(os.path.expanduser(text), recursive=True)) if _is_data_file(p)
            ]
            if not found:
                raise OfflineDataError(f"The offline input pattern {text!r} matches no *.parquet files.")
            files += found
        elif path.is_dir():
            found = sorted(str(p) for p in path.rglob(f"*{PARQUET_SUFFIX}") if _is_data_file(p))
            if not found:
                raise OfflineDataError(
                    f"The offline input directory {text!r} holds no *.parquet files (an empty data set)."
                )
            files += found
        elif path.is_file():
            files.append(str(path))
        else:
            raise OfflineDataError(f"The offline input {text!r} does not exist.")
    return list(dict.fromkeys(files))


def _is_data_file(path: str | Path) -> bool:
    path = Path(path)
    return path.is_file() and path.name.endswith(PARQUET_SUFFIX) and not path.name.startswith(".")


@dataclass
class DatasetInfo:
    """What the files' footers say: rows and uncompressed bytes, per file and in total."""

    files: list[str]
    rows_per_file: list[int]
    bytes_per_file: list[int]

    @property
    def num_rows(self) -> int:
        return sum(self.rows_per_file)

    @property
    def num_bytes(self) -> int:
        return sum(self.bytes_per_file)


def open_parquet(path: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        raise OfflineDataError(
            f"Offline data file {path} is not a complete Parquet file ({exc}); its writer may have been "
            "interrupted while writing it."
        ) from exc


def inspect_files(files: Sequence[str], layout: EpisodeLayout, columns: Iterable[str]) -> DatasetInfo:
    """Check every file's schema (footer only) and count its rows; an empty data set is an error."""
    columns = list(columns)
    rows, sizes = [], []
    for path in files:
        parquet = open_parquet(path)
        try:
            check_schema(parquet.schema_arrow, layout, columns, path)
            metadata = parquet.metadata
            rows.append(int(metadata.num_rows))
            sizes.append(sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups)))
        finally:
            parquet.close()
    info = DatasetInfo(list(files), rows, sizes)
    if info.num_rows == 0:
        shown = ", ".join(files[:5]) + (f", ... ({len(files) - 5} more)" if len(files) > 5 else "")
        raise OfflineDataError(f"The offline data set is empty: {len(files)} file(s) with 0 rows ({shown}).")
    return info


def read_file(path: str, columns: Sequence[str]) -> pa.Table:
    """One file's ``columns``; read errors name the file."""
    try:
        return pq.read_table(path, columns=list(columns))
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        raise OfflineDataError(f"Offline data file {path} cannot be read: {exc}") from exc


def read_files(files: Sequence[str], columns: Sequence[str]) -> pa.Table:
    """All files' ``columns`` as one table, in file order (the small, in-memory case)."""
    tables = [read_file(path, columns) for path in files]
    return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
