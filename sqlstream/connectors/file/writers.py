"""The file sink's writers: JSON lines / CSV (:class:`LinesWriter`) and Parquet,
one file or rolled parts (:class:`ParquetWriter`), which encodes and writes on a
:class:`~sqlstream.connectors.file.write_thread.WriteThread`."""

from __future__ import annotations

import io
import os

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from sqlstream.connectors.base import RunContext, SinkWriter
from sqlstream.connectors.durable_files import (
    fsync_directory,
    publish,
    remove_if_exists,
    remove_stale_temp_files,
    temp_path,
)
from sqlstream.connectors.encode import encode_json_lines
from sqlstream.connectors.file.write_thread import WriteThread

__all__ = ["LinesWriter", "ParquetWriter", "open_parquet"]

#: a column's dictionary page stops growing at this size and the rest of the row group
#: is written plain: pyarrow's default (1 MiB) spends about half of the encoding time
#: on dictionaries of high-cardinality columns (random doubles, ids) that it then drops,
#: and makes larger files; low-cardinality columns (keys, window bounds) still fit
DICTIONARY_PAGE_LIMIT = 128 << 10


def open_parquet(path: str, schema: pa.Schema) -> pq.ParquetWriter:
    """A Parquet file being written at ``path``, with the sink's encoding options."""
    return pq.ParquetWriter(path, schema, dictionary_pagesize_limit=DICTIONARY_PAGE_LIMIT)


class LinesWriter(SinkWriter):
    """JSON lines / CSV. ``append``: each batch is appended (and flushed) to ``path`` as a
    whole. Otherwise the rows go to a hidden temporary file that replaces ``path`` at a
    clean close; a failed or killed run leaves the previous output as it was."""

    def output_path(self) -> str | None:
        return self.path

    def __init__(self, path: str, fmt: str, schema: pa.Schema, append: bool, delimiter: str):
        self.path = path
        self.fmt = fmt
        self.schema = schema
        self.delimiter = delimiter
        directory, name = os.path.split(path)
        os.makedirs(directory or ".", exist_ok=True)
        remove_stale_temp_files(directory or ".", name.__eq__)
        self._temp = None if append else temp_path(path)
        existing = append and os.path.exists(path) and os.path.getsize(path) > 0
        self._handle = open(path, "ab") if append else open(self._temp, "wb")
        self._header_written = existing

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self.fmt == "json":
            data = encode_json_lines(batch)
        else:
            buffer = io.BytesIO()
            options = pcsv.WriteOptions(include_header=not self._header_written, delimiter=self.delimiter)
            pcsv.write_csv(batch, buffer, write_options=options)
            self._header_written = True
            data = buffer.getvalue()
        self._handle.write(data)
        self._handle.flush()

    def flush(self) -> None:
        self._handle.flush()

    def durable_rows(self, written: int) -> int:
        """Appended rows are durable once synced; overwriting output only at close."""
        if self._temp is not None:
            return 0
        self._handle.flush()
        os.fsync(self._handle.fileno())
        return written

    def close(self) -> None:
        if self._handle.closed:
            return
        self._handle.flush()
        if self._temp is None:
            os.fsync(self._handle.fileno())
        self._handle.close()
        if self._temp is not None:
            publish(self._temp, self.path)  # syncs the file, renames it, syncs the directory

    def abort(self) -> None:
        if self._temp is None:
            self.close()  # appended rows stay
            return
        if not self._handle.closed:
            self._handle.close()
            remove_if_exists(self._temp)


def _part_name(number: int) -> str:
    return f"part-{number:05d}.parquet"


def _is_part(name: str) -> bool:
    return name.startswith("part-") and name.endswith(".parquet")


class ParquetWriter(SinkWriter):
    """Row groups of up to ``row_group_rows``; a file becomes visible only when complete.
    Row groups are encoded and written on a :class:`WriteThread`; a file is closed and
    renamed into place once its writes are done.

    Rolled parts are numbered after the parts already in the directory. Overwriting
    removes the old parts only at a clean close (and renumbers the new ones from
    ``part-00000``), so a run that fails or is killed leaves them in place."""

    def output_path(self) -> str | None:
        return self.path

    def __init__(self, path: str, schema: pa.Schema, ctx: RunContext, rows_per_file: int | None,
                 roll_interval_us: int | None, append: bool):
        self.path = path
        self.schema = schema
        self.clock = ctx.clock
        self.append = append
        self.rolling = rows_per_file is not None or roll_interval_us is not None
        self.rows_per_file = rows_per_file
        self.roll_interval_us = roll_interval_us
        self.row_group_rows = 128 * 1024
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._temp = ""
        self._final = ""
        self._file_rows = 0
        self._written = 0  # rows handed to write()
        self._committed = 0  # rows in files renamed into place
        self._part_started_us: int | None = None  # when the current part got its first row
        self._old_parts: list[str] = []  # overwrite: parts of earlier runs, removed at a clean close
        self._new_parts: list[str] = []
        self._writes = WriteThread(f"writing {path}")
        if self.rolling:
            os.makedirs(path, exist_ok=True)
            remove_stale_temp_files(path, _is_part)
            parts = sorted(n for n in os.listdir(path) if _is_part(n))
            if not append:
                self._old_parts = [os.path.join(path, n) for n in parts]
            self._part = 1 + max((int(n[5:10]) for n in parts if n[5:10].isdigit()), default=-1)
        else:
            directory, name = os.path.split(path)
            os.makedirs(directory or ".", exist_ok=True)
            remove_stale_temp_files(directory or ".", name.__eq__)

    def _open(self) -> None:
        if self.rolling:
            self._final = os.path.join(self.path, _part_name(self._part))
            self._part += 1
        else:
            self._final = self.path
        self._temp = temp_path(self._final)
        self._writer = open_parquet(self._temp, self.schema)
        self._file_rows = 0

    def _commit(self) -> None:
        if self._writer is None:
            return
        self._writes.wait()
        self._writer.close()
        publish(self._temp, self._final)
        self._new_parts.append(self._final)
        self._writer = None
        self._file_rows = 0
        self._part_started_us = None
        self._committed = self._written

    def _flush_pending(self) -> None:
        if not self._pending:
            return
        if self._writer is None:
            self._open()
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        writer = self._writer
        self._writes.submit(lambda: writer.write_table(table, row_group_size=max(1, table.num_rows)))
        self._file_rows += table.num_rows
        self._pending, self._pending_rows = [], 0

    def write(self, batch: pa.RecordBatch) -> None:
        """Add ``batch``; with ``rows_per_file`` it is split so that every part holds
        exactly that many rows (the last one of a run fewer)."""
        offset = 0
        while offset < batch.num_rows:
            piece = batch.slice(offset, self._room())
            offset += piece.num_rows
            self._add(piece)
            self._maybe_roll()

    def _room(self) -> int | None:
        """Rows the current part can still take (None: any number)."""
        if not self.rolling or self.rows_per_file is None:
            return None
        return self.rows_per_file - self._file_rows - self._pending_rows

    def _add(self, batch: pa.RecordBatch) -> None:
        if self._part_started_us is None:
            self._part_started_us = self.clock.now_us()
        self._written += batch.num_rows
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= self.row_group_rows:
            self._flush_pending()

    def _maybe_roll(self) -> None:
        if not self.rolling:
            return
        too_many = self.rows_per_file is not None and self._file_rows + self._pending_rows >= self.rows_per_file
        too_old = (
            self.roll_interval_us is not None
            and self._part_started_us is not None
            and self.clock.now_us() - self._part_started_us >= self.roll_interval_us
        )
        if too_many or too_old:
            self._flush_pending()
            self._commit()

    def flush(self) -> None:
        self._maybe_roll()

    def durable_rows(self, written: int) -> int:
        """Rows in committed files only: input is acknowledged as parts are renamed into
        place (roll with rows_per_file / roll_interval), or at the end for one file."""
        self._maybe_roll()
        return written - (self._written - self._committed)

    def close(self) -> None:
        try:
            self._flush_pending()
            if self._writer is None and not self.rolling:
                self._open()  # an empty result is still a valid (empty) Parquet file
            self._commit()
        except Exception:
            self.abort()  # a write failed: the file in progress goes, earlier output stays
            raise
        self._writes.stop()
        if self._old_parts:
            self._replace_old_parts()

    def _replace_old_parts(self) -> None:
        """Overwrite, at a clean close: remove the earlier runs' parts, then number this
        run's parts from part-00000 (in ascending order, so no name is taken twice)."""
        for old in self._old_parts:
            remove_if_exists(old)
        self._old_parts = []
        for number, part in enumerate(self._new_parts):
            target = os.path.join(self.path, _part_name(number))
            if part != target:
                os.replace(part, target)
        fsync_directory(self.path)

    def abort(self) -> None:
        """The run failed: drop the file in progress; committed parts and old parts stay."""
        self._writes.stop()
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.close()
            finally:
                remove_if_exists(self._temp)
        self._pending, self._pending_rows = [], 0
        self._old_parts = []
