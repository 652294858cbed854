"""Writing Parquet files of bounded size, atomically, with bounded memory.

RLlib's recording runner keeps every sample it is asked to write until a file's worth is
collected and runs out of memory on long runs. Here rows go to disk as Parquet row groups as
soon as a row group's worth (``row_group_bytes``) is buffered, so memory holds at most one row
group; a file ends (and a new one starts) after ``max_rows_per_file`` rows or about
``max_file_bytes`` uncompressed bytes, so files stay small enough to stream and shuffle.

A file is written under a hidden temporary name (``.<name>.parquet.tmp``), then closed,
fsync'ed and renamed to ``<name>.parquet`` (``os.replace`` is atomic on POSIX), and the
directory is fsync'ed: a reader that lists ``*.parquet`` can never see a half-written file,
whether the writer crashed, was killed, or the machine lost power.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from lightning_rl.offline.arrow import pa, pq
from lightning_rl.offline.config import OutputConfig

TEMP_SUFFIX = ".tmp"
PARQUET_SUFFIX = ".parquet"


class ParquetFileWriter:
    """Appends tables of one schema to a sequence of bounded, atomically published Parquet files."""

    def __init__(self, directory: str | os.PathLike, schema: pa.Schema, config: OutputConfig) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self.config = config
        self._uid = uuid.uuid4().hex[:12]
        self._file_index = 0
        self._buffer: list[pa.Table] = []
        self._buffered_rows = 0
        self._buffered_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._temp_path: Path | None = None
        self._final_path: Path | None = None
        self._rows_in_file = 0
        self._bytes_in_file = 0
        self.files_written: list[str] = []
        self.rows_written = 0
        # The largest number of bytes ever buffered: what the memory bound test checks.
        self.peak_buffered_bytes = 0

    @property
    def buffered_rows(self) -> int:
        return self._buffered_rows

    def write(self, table: pa.Table) -> None:
        """Append rows; they reach disk once a row group's worth is buffered."""
        table = table.cast(self.schema) if table.schema != self.schema else table
        if table.num_rows == 0:
            return
        row_bytes = max(1, table.nbytes // table.num_rows)
        start = 0
        while start < table.num_rows:
            room = self.config.max_rows_per_file - self._rows_in_file - self._buffered_rows
            bytes_room = self.config.max_file_size - self._bytes_in_file - self._buffered_bytes
            room = max(1, min(room, bytes_room // row_bytes))
            piece = table.slice(start, min(room, table.num_rows - start))
            start += piece.num_rows
            self._buffer.append(piece)
            self._buffered_rows += piece.num_rows
            self._buffered_bytes += piece.nbytes
            self.peak_buffered_bytes = max(self.peak_buffered_bytes, self._buffered_bytes)
            if self._buffered_bytes >= self.config.row_group_bytes:
                self._write_row_group()
            if (
                self._rows_in_file + self._buffered_rows >= self.config.max_rows_per_file
                or self._bytes_in_file + self._buffered_bytes >= self.config.max_file_size
            ):
                self.flush()

    def _write_row_group(self) -> None:
        if not self._buffered_rows:
            return
        if self._writer is None:
            name = f"{self.config.file_prefix}-{self._uid}-{self._file_index:06d}{PARQUET_SUFFIX}"
            self._file_index += 1
            self._final_path = self.directory / name
            self._temp_path = self.directory / f".{name}{TEMP_SUFFIX}"
            compression = None if self.config.compression.lower() == "none" else self.config.compression
            # Dictionary-encode only strings (episode ids): on float observations a dictionary
            # of mostly unique values made pages ~40% larger than plain encoding.
            strings = [f.name for f in self.schema if pa.types.is_string(f.type)]
            self._writer = pq.ParquetWriter(
                str(self._temp_path), self.schema, compression=compression, use_dictionary=strings
            )
        table = pa.concat_tables(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        self._writer.write_table(table, row_group_size=table.num_rows)
        self._rows_in_file += table.num_rows
        self._bytes_in_file += self._buffered_bytes
        self._buffer, self._buffered_rows, self._buffered_bytes = [], 0, 0

    def flush(self) -> str | None:
        """Publish everything written so far as one complete file; returns its path (None: no rows)."""
        self._write_row_group()
        if self._writer is None:
            return None
        self._writer.close()
        self._writer = None
        _fsync_file(self._temp_path)
        os.replace(self._temp_path, self._final_path)
        _fsync_directory(self.directory)
        path = str(self._final_path)
        self.files_written.append(path)
        self.rows_written += self._rows_in_file
        self._rows_in_file = self._bytes_in_file = 0
        self._temp_path = self._final_path = None
        return path

    def close(self) -> None:
        self.flush()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(path: Path) -> None:
    """Make the rename itself durable (where the platform allows opening directories)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
