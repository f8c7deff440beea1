"""The file sink under checkpoints (``RunContext.checkpointing``): each epoch's rows
become visible once, when the checkpoint that holds them commits.

``path`` is a directory of part files, whatever the format (Parquet, JSON lines, CSV).
An epoch's rows go to hidden part files ``.part-<n>-<i>.<ext>.pending``; ``commit``
renames them to ``part-<n>-<i>.<ext>`` (``n`` = the manifest's base + the epoch, ``i``
the part of the epoch: ``rows_per_file``/``roll_interval`` roll within an epoch) and
records the epoch in the hidden manifest ``_sqlstream_manifest.json``. Names are fixed
by the epoch, so committing again after a crash renames nothing twice. A reader of
``<path>/*.<ext>`` (DuckDB, ``pyarrow.dataset``) sees whole committed epochs only.

``recover(E, prepared)`` (before any write) commits E if the crash came between the
checkpoint and the commit, forgets later epochs in the manifest, and removes what they
left (hidden files, parts numbered after E). Each step can be repeated, so a crash
during recovery is recovered the same way.

Modes: with checkpoints a resumed run always continues what the checkpoint committed.
``overwrite`` (the default) applies when the sink's checkpointed history starts
(``recover(0)``: a first run, ``--from-scratch``): earlier parts are removed then.
``append`` keeps them and numbers new parts after them.

Parts are encoded and written on a :class:`~sqlstream.connectors.file.write_thread.WriteThread`;
closing a part (a roll, ``prepare_commit``, a clean close) waits for its writes, so a
checkpoint never stores an epoch whose rows are not all on disk, and a write that
failed fails the checkpoint.
"""

from __future__ import annotations

import os
import re

import pyarrow as pa
import pyarrow.csv as pcsv

from sqlstream.connectors.base import RunContext, SinkWriter
from sqlstream.connectors.durable_files import fsync_directory, remove_if_exists, remove_stale_temp_files
from sqlstream.connectors.encode import encode_json_lines
from sqlstream.connectors.file.manifest import EpochManifest
from sqlstream.connectors.file.write_thread import WriteThread
from sqlstream.connectors.file.writers import open_parquet
from sqlstream.errors import ConnectorError

__all__ = ["EpochPartsWriter", "DIRECTORY_MANIFEST", "EXTENSIONS", "part_name"]

#: the manifest of a directory sink, in the directory
DIRECTORY_MANIFEST = "_sqlstream_manifest.json"
#: part file extension by format
EXTENSIONS = {"parquet": "parquet", "json": "jsonl", "csv": "csv"}
_PART = re.compile(r"^part-(?P<number>[0-9]{8})-[0-9]{4,}\.(parquet|jsonl|csv)$")
_PENDING_PART = re.compile(r"^\.part-[0-9]{8}-[0-9]{4,}\.(parquet|jsonl|csv)\.pending$")


def part_name(number: int, index: int, extension: str = "parquet") -> str:
    """The visible name of part ``index`` of the epoch numbered ``number`` (base + epoch)."""
    return f"part-{number:08d}-{index:04d}.{extension}"


class _PartFile:
    """One part file being written, in the sink's format."""

    def __init__(self, path: str, fmt: str, schema: pa.Schema, delimiter: str):
        self.fmt = fmt
        if fmt == "parquet":
            self._writer = open_parquet(path, schema)
        elif fmt == "csv":
            self._writer = pcsv.CSVWriter(path, schema, write_options=pcsv.WriteOptions(delimiter=delimiter))
        else:
            self._writer = open(path, "wb")

    def write(self, table: pa.Table) -> None:
        if self.fmt == "parquet":
            self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        elif self.fmt == "csv":
            self._writer.write_table(table)
        else:
            for batch in table.to_batches():
                self._writer.write(encode_json_lines(batch))

    def close(self) -> None:
        self._writer.close()


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _EpochWriter(SinkWriter):
    """What both writers share: the recovery steps, the epoch count, and the rows
    committed (for ``durable_rows``). Subclasses say how a history starts, how an epoch
    is sealed, committed and rolled back."""

    delivery = "exactly-once"

    def __init__(self, manifest_path: str, append: bool):
        self.manifest_path = manifest_path
        self.append = append
        self._manifest: EpochManifest | None = None  # set by recover
        self._epoch = 0  # the epoch being written
        self._written = 0  # rows handed to write()
        self._committed = 0  # of those, rows in committed epochs
        self._prepared_rows: dict[int, int] = {}
        self._epoch_rows = 0  # rows written in the epoch being written

    def _require_recovered(self) -> EpochManifest:
        if self._manifest is None:
            raise ConnectorError(
                "a checkpointed file sink was written to before recover(): the run must recover "
                "it first (recover(0, None) when there is no checkpoint yet)"
            )
        return self._manifest

    def recover(self, epoch: int, prepared: dict | None) -> None:
        manifest = EpochManifest.load(self.manifest_path)
        if epoch == 0:
            # a new checkpointed history (a first run, --from-scratch, or a crash before the
            # first checkpoint): what an earlier history committed is kept (append) or
            # replaced (overwrite); what it left uncommitted goes
            if manifest is not None:
                self._remove_after(manifest, manifest.committed)
            manifest = EpochManifest(self.manifest_path, base=self._start_history())
            manifest.save()
        elif manifest is None:
            raise ConnectorError(
                f"the checkpoint resumes at epoch {epoch}, but the sink's manifest {self.manifest_path} is gone",
                hint="the sink's output no longer matches the checkpoint; start over with --from-scratch",
            )
        if epoch > manifest.committed:  # the crash came between the checkpoint and its commit
            if prepared is None or epoch != manifest.committed + 1:
                raise ConnectorError(
                    f"the checkpoint resumes at epoch {epoch}, but the sink's manifest {self.manifest_path} "
                    f"has epochs up to {manifest.committed} only",
                    hint="the sink's output no longer matches the checkpoint; start over with --from-scratch",
                )
            self._commit_epoch(manifest, epoch, prepared)
        manifest.roll_back_to(epoch)
        self._remove_after(manifest, epoch)
        self._manifest = manifest
        self._epoch = epoch + 1

    def prepare_commit(self, epoch: int) -> dict | None:
        self._require_recovered()
        if epoch != self._epoch:
            raise ConnectorError(f"checkpoint epoch {epoch} prepared while the sink writes epoch {self._epoch}")
        prepared = self._seal(epoch)
        self._prepared_rows[epoch] = prepared["rows"]
        self._epoch = epoch + 1
        return prepared

    def commit(self, epoch: int, prepared: dict | None) -> None:
        manifest = self._require_recovered()
        if epoch > manifest.committed + 1:
            raise ConnectorError(f"checkpoint epoch {epoch} committed before epoch {manifest.committed + 1}")
        if epoch > manifest.committed:
            self._commit_epoch(manifest, epoch, prepared or {})
        self._committed += self._prepared_rows.pop(epoch, 0)

    def durable_rows(self, written: int) -> int:
        """Rows of committed epochs only (input is acknowledged as checkpoints commit)."""
        return written - (self._written - self._committed)

    def close(self) -> None:
        """A clean end: rows written after the last checkpoint are committed as one more
        epoch (a run resumed from an earlier checkpoint rolls it back like any other)."""
        try:
            if self._manifest is not None and self._epoch_rows:
                epoch = self._epoch
                self.commit(epoch, self.prepare_commit(epoch))
        finally:
            self._release()

    def abort(self) -> None:
        """A failed run: drop the epoch being written; recover removes anything else."""
        self._release()

    # -- what each writer does -------------------------------------------------------------
    def _start_history(self) -> int:
        raise NotImplementedError

    def _seal(self, epoch: int) -> dict:
        raise NotImplementedError

    def _commit_epoch(self, manifest: EpochManifest, epoch: int, prepared: dict) -> None:
        raise NotImplementedError

    def _remove_after(self, manifest: EpochManifest, epoch: int) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError


class EpochPartsWriter(_EpochWriter):
    """A directory of part files, one or more per epoch."""

    def output_path(self) -> str | None:
        return self.path

    def __init__(self, path: str, fmt: str, schema: pa.Schema, ctx: RunContext, rows_per_file: int | None,
                 roll_interval_us: int | None, append: bool, delimiter: str = ","):
        if os.path.isfile(path):
            raise ConnectorError(
                f"with checkpoints a file sink writes a directory of part files (one or more per "
                f"checkpoint), but {path} is a file",
                hint="name a directory as the path (it is created), or move the file away",
            )
        os.makedirs(path, exist_ok=True)
        remove_stale_temp_files(path, DIRECTORY_MANIFEST.__eq__)  # a manifest save a crash cut short
        super().__init__(os.path.join(path, DIRECTORY_MANIFEST), append)
        self.path = path
        self.fmt = fmt
        self.extension = EXTENSIONS[fmt]
        self.delimiter = delimiter
        self.schema = schema
        self.clock = ctx.clock
        self.rows_per_file = rows_per_file
        self.roll_interval_us = roll_interval_us
        self.row_group_rows = 128 * 1024
        self._parts: list[str] = []  # visible names of this epoch's parts
        self._writer: _PartFile | None = None
        self._file_rows = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._part_started_us: int | None = None
        self._writes = WriteThread(f"writing {path}")

    def _pending_path(self, name: str) -> str:
        return os.path.join(self.path, f".{name}.pending")

    def _start_history(self) -> int:
        numbers = []
        for name in os.listdir(self.path):
            if _PART.match(name) is None:
                continue
            if not self.append:
                remove_if_exists(os.path.join(self.path, name))
            else:
                numbers.append(int(_PART.match(name)["number"]))
        fsync_directory(self.path)
        return max(numbers, default=0)

    def write(self, batch: pa.RecordBatch) -> None:
        self._require_recovered()
        offset = 0
        while offset < batch.num_rows:
            room = None if self.rows_per_file is None else self.rows_per_file - self._file_rows - self._pending_rows
            piece = batch.slice(offset, room)
            offset += piece.num_rows
            self._add(piece)
            self._maybe_roll()

    def _add(self, batch: pa.RecordBatch) -> None:
        if self._part_started_us is None:
            self._part_started_us = self.clock.now_us()
        self._written += batch.num_rows
        self._epoch_rows += batch.num_rows
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= self.row_group_rows:
            self._flush_pending()

    def _flush_pending(self) -> None:
        if not self._pending:
            return
        if self._writer is None:
            name = part_name(self._manifest.base + self._epoch, len(self._parts), self.extension)
            self._parts.append(name)
            self._writer = _PartFile(self._pending_path(name), self.fmt, self.schema, self.delimiter)
            self._file_rows = 0
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        writer = self._writer
        self._writes.submit(lambda: writer.write(table))
        self._file_rows += table.num_rows
        self._pending, self._pending_rows = [], 0

    def _close_part(self) -> None:
        self._flush_pending()
        if self._writer is not None:
            self._writes.wait()
            self._writer.close()
            _fsync_file(self._pending_path(self._parts[-1]))
            self._writer = None
        self._file_rows = 0
        self._part_started_us = None

    def _maybe_roll(self) -> None:
        rows = self._file_rows + self._pending_rows
        too_many = self.rows_per_file is not None and rows >= self.rows_per_file
        too_old = (
            self.roll_interval_us is not None and self._part_started_us is not None
            and self.clock.now_us() - self._part_started_us >= self.roll_interval_us
        )
        if rows and (too_many or too_old):
            self._close_part()

    def flush(self) -> None:
        self._maybe_roll()

    def _seal(self, epoch: int) -> dict:
        self._close_part()
        fsync_directory(self.path)
        prepared = {"files": self._parts, "rows": self._epoch_rows}
        self._parts, self._epoch_rows = [], 0
        return prepared

    def _commit_epoch(self, manifest: EpochManifest, epoch: int, prepared: dict) -> None:
        files = list(prepared.get("files", []))
        for name in files:
            final, pending = os.path.join(self.path, name), self._pending_path(name)
            if os.path.exists(pending):
                os.replace(pending, final)
            elif not os.path.exists(final):
                raise ConnectorError(
                    f"part file {name} of checkpoint epoch {epoch} is missing from {self.path}",
                    hint="the sink's output no longer matches the checkpoint; start over with --from-scratch",
                )
        fsync_directory(self.path)
        manifest.add({"epoch": epoch, "files": files, "rows": int(prepared.get("rows", 0))})

    def _remove_after(self, manifest: EpochManifest, epoch: int) -> None:
        last = manifest.base + epoch
        for name in os.listdir(self.path):
            match = _PART.match(name)
            if _PENDING_PART.match(name) or (match is not None and int(match["number"]) > last):
                remove_if_exists(os.path.join(self.path, name))
        fsync_directory(self.path)

    def _release(self) -> None:
        self._writes.stop()
        self._pending, self._pending_rows = [], 0
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                writer.close()
        finally:
            for name in self._parts:
                remove_if_exists(self._pending_path(name))
            self._parts = []
