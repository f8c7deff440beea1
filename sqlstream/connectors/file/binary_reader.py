"""``format = 'binary'``: one row per file, for images and other blobs a camera or a
scanner drops into a folder.

The declared columns are taken by name from what a file has: ``path VARCHAR``,
``content BYTEA``, ``size BIGINT``, ``mtime TIMESTAMP`` (any subset, in any order).
Files are read in name order, a batch at a time (up to ``batch_size`` files or
:data:`BATCH_BYTES` of content). With ``watch = true`` the path is listed again every
``poll_interval`` and files that appear are read too; a file is taken once its
modification time is ``settle`` old, so one still being written is not read half done
(a writer that renames a finished file into the folder needs no wait at all).

The position is the list of files read (see :mod:`sqlstream.connectors.file.positions`);
files that no longer exist are dropped from it when the folder is listed again, so a
drop folder that is cleaned up keeps it small.
"""

from __future__ import annotations

import os
import time
from collections import deque

import pyarrow as pa

from sqlstream.connectors.base import RunContext, SourceBatch, SourceConnector, SourceReader
from sqlstream.connectors.dead_letters import DeadLetter
from sqlstream.connectors.file.positions import finished_file, resume_plan
from sqlstream.errors import ConnectorError, Location

__all__ = ["BinaryFilesReader", "BINARY_COLUMNS", "check_binary_columns", "BATCH_BYTES"]

#: what a file offers, by column name
BINARY_COLUMNS = {"path": pa.string(), "content": pa.binary(), "size": pa.int64(), "mtime": pa.timestamp("us")}
_SQL_TYPES = {"path": "VARCHAR", "content": "BYTEA", "size": "BIGINT", "mtime": "TIMESTAMP"}


def _type_name(t: pa.DataType) -> str:
    """The SQL name of the types a user may declare for these columns (else Arrow's)."""
    for check, name in ((pa.types.is_string, "VARCHAR"), (pa.types.is_large_string, "VARCHAR"),
                        (pa.types.is_binary, "BYTEA"), (pa.types.is_large_binary, "BYTEA"),
                        (pa.types.is_int64, "BIGINT"), (pa.types.is_integer, "INTEGER"),
                        (pa.types.is_timestamp, "TIMESTAMP")):
        if check(t):
            return name
    return str(t).upper()
#: a batch closes after this much content, whatever its file count
BATCH_BYTES = 64 << 20


def check_binary_columns(schema: pa.Schema, where: Location | None) -> None:
    """Every declared column is one a file offers, of a type its value fits."""
    offered = ", ".join(f"{name} {sql}" for name, sql in _SQL_TYPES.items())
    for field in schema:
        wanted = BINARY_COLUMNS.get(field.name)
        if wanted is None:
            raise ConnectorError(f"format = 'binary' has no column '{field.name}'", location=where,
                                 hint=f"declare some of: {offered}")
        fits = (field.type == wanted or (field.name == "size" and pa.types.is_integer(field.type))
                or (field.name == "mtime" and pa.types.is_timestamp(field.type))
                or (field.name == "content" and pa.types.is_large_binary(field.type))
                or (field.name == "path" and pa.types.is_large_string(field.type)))
        if not fits:
            raise ConnectorError(
                f"format = 'binary': column '{field.name}' is {_type_name(field.type)}, "
                f"but a file's {field.name} is {_SQL_TYPES[field.name]}", location=where,
                hint=f"declare {field.name} {_SQL_TYPES[field.name]}")
    if not len(schema):
        raise ConnectorError("format = 'binary' needs at least one column", location=where,
                             hint=f"declare some of: {offered}")


class BinaryFilesReader(SourceReader):
    """Whole files as rows; bounded, or watching the path for new files."""

    def __init__(self, connector: SourceConnector, list_files, ctx: RunContext, *, watch: bool,
                 poll_interval_s: float, settle_s: float):
        self.c = connector
        self.schema = connector.schema
        self.clock = ctx.clock
        self.bounded = not watch
        self.watch = watch
        self.poll_interval_s = poll_interval_s
        self.settle_s = settle_s
        self.batch_files = ctx.batch_size
        self._list_files = list_files  # () -> the files the path names now, sorted
        plan = resume_plan(list_files(), ctx.start_position, connector.source_name)
        self._done: list[dict] = list(plan.done)
        self._seen = {entry["path"] for entry in self._done}
        self._pending: deque[str] = deque()
        self._next_listing = 0.0
        if not watch:
            self._queue(plan.files, settled_only=False)
        self._finished = False

    @property
    def exhausted(self) -> bool:
        return self._finished

    def next_wakeup(self) -> float | None:
        return None if self._pending or not self.watch else self._next_listing

    def _queue(self, files: list[str], settled_only: bool) -> None:
        cutoff = time.time() - self.settle_s
        for path in files:
            if path in self._seen:
                continue
            if settled_only:
                try:
                    if os.stat(path).st_mtime > cutoff:
                        continue  # still being written, perhaps: the next listing takes it
                except OSError:
                    continue
            self._seen.add(path)
            self._pending.append(path)

    def _list_again(self) -> None:
        files = self._list_files()
        present = set(files)
        self._done = [entry for entry in self._done if entry["path"] in present]  # cleaned-up files
        self._seen = {entry["path"] for entry in self._done} | set(self._pending)
        self._queue(files, settled_only=True)
        self._next_listing = self.clock.monotonic() + self.poll_interval_s

    def poll(self) -> SourceBatch | None:
        if not self._pending:
            if not self.watch:
                self._finished = True
                return None
            if self.clock.monotonic() < self._next_listing:
                return None
            self._list_again()
            if not self._pending:
                return None
        rows: dict[str, list] = {name: [] for name in BINARY_COLUMNS}
        dead: list[DeadLetter] = []
        content_bytes = 0
        while self._pending and len(rows["path"]) < self.batch_files and content_bytes < BATCH_BYTES:
            path = self._pending.popleft()
            try:
                stat = os.stat(path)
                with open(path, "rb") as handle:
                    content = handle.read() if "content" in self.schema.names else b""
            except OSError as error:
                dead.append(DeadLetter(self.c.source_name, "decode", f"cannot read the file: {error}", None, path))
                self._done.append(finished_file(path, 0))
                continue
            rows["path"].append(path)
            rows["content"].append(content)
            rows["size"].append(stat.st_size)
            rows["mtime"].append(stat.st_mtime_ns // 1000)
            content_bytes += len(content)
            self._done.append(finished_file(path, stat.st_size))
        columns = [pa.array(rows[f.name], BINARY_COLUMNS[f.name]).cast(f.type) for f in self.schema]
        batch = pa.RecordBatch.from_arrays(columns, schema=self.schema)
        return SourceBatch(batch, dead, raw_count=batch.num_rows + len(dead))

    def position(self) -> dict | None:
        """The files read so far (``done``); a binary file is never read in part."""
        return {"done": list(self._done), "file": None}
