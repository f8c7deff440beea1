"""``connector = 'file'``: JSON lines, CSV and Parquet files as a bounded source or a sink.

Source: ``path`` is a file, a directory or a glob; files are read in sorted name
order, in blocks of about ``file_batch_size`` rows (Parquet: record batches of that
many rows). Sink: JSON/CSV are appended at batch boundaries; Parquet is written
under a temporary name and renamed into place on close (or rolled into part files
with ``rows_per_file`` / ``roll_interval``), so no reader ever sees a half-written file.
"""

from __future__ import annotations

import glob
import io
import os
import queue
import threading

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from sqlstream.batches import to_batch
from sqlstream.connectors.base import (
    METADATA_COLUMNS,
    DeadLetter,
    RunContext,
    SinkConnector,
    SinkWriter,
    SourceBatch,
    SourceConnector,
    SourceReader,
    register_sink,
    register_source,
)
from sqlstream.connectors.decode import CsvDecoder, JsonDecoder, conform_table
from sqlstream.connectors.encode import encode_json_lines, is_nested
from sqlstream.connectors.options import NULL_VALUES_OPTION, OptionSpec, null_spellings
from sqlstream.errors import ConnectorError, Location
from sqlstream.failure_isolation import isolate_failures
from sqlstream.paths import resolve_path

__all__ = ["FileSource", "FileSink", "resolve_files"]

_FORMATS = ("json", "csv", "parquet")


def resolve_files(path: str) -> list[str]:
    """Files named by a path, directory or glob, in sorted name order."""
    if os.path.isdir(path):
        names = [os.path.join(path, n) for n in os.listdir(path) if not n.startswith((".", "_"))]
        return sorted(n for n in names if os.path.isfile(n))
    if os.path.isfile(path):  # a name that exists is taken literally, even with [ or *
        return [path]
    if any(ch in path for ch in "*?["):
        return sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
    return []


def _after_nth_newline(data: bytes, n: int, total: int) -> int:
    """The offset just past the ``n``-th newline of ``data``, which holds ``total`` > n
    of them (searched from whichever end is nearer)."""
    if n <= total - n:
        position = -1
        for _ in range(n):
            position = data.index(b"\n", position + 1)
    else:
        position = len(data)
        for _ in range(total - n + 1):
            position = data.rindex(b"\n", 0, position)
    return position + 1


class _TextFileReader(SourceReader):
    """JSON lines / CSV: reads whole lines in blocks and decodes each block vectorized."""

    bounded = True

    def __init__(self, connector: "FileSource", files: list[str], ctx: RunContext):
        self.c = connector
        self.files = files
        self.ctx = ctx
        self.rows_per_block = ctx.file_batch_size
        self._file_index = -1
        self._handle: io.BufferedReader | None = None
        self._line = 0  # 0-based line number of the next block's first line
        self._block_bytes = 1 << 20
        self._carry = b""  # bytes read past the last block's final line
        self._decoder = None
        self._done = not files

    @property
    def exhausted(self) -> bool:
        return self._done

    def _open_next(self) -> bool:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        self._file_index += 1
        if self._file_index >= len(self.files):
            self._done = True
            return False
        path = self.files[self._file_index]
        self._handle = open(path, "rb")
        self._carry = b""
        self._line = 0
        self._decoder = self._make_decoder()
        return True

    def _make_decoder(self):
        schema = self.c.schema
        fmt = self.c.config["format"]
        if fmt == "json":
            return JsonDecoder(schema, self.c.source_name, self.c.config["timestamp_format"])
        delimiter = self.c.config["delimiter"]
        if self.c.config["header"]:
            header = self._handle.readline()
            self._line = 1
            # utf-8-sig: a byte order mark (Excel writes one) is not part of the first name
            text = header.decode("utf-8-sig", "replace").rstrip("\r\n")
            names = [n.strip().strip('"').lower() for n in text.split(delimiter)]
            missing = [f.name for f in schema if f.name not in names and f.name not in METADATA_COLUMNS]
            if missing:
                raise ConnectorError(
                    f"source '{self.c.source_name}': the CSV header of {self.files[self._file_index]} "
                    f"has no column {', '.join(repr(m) for m in missing)}",
                    hint=f"its columns: {', '.join(names)}; or set header = false to read columns by position",
                )
        else:
            names = [f.name for f in schema]
        return CsvDecoder(
            schema, self.c.source_name, names, delimiter, self.c.config["timestamp_format"],
            null_spellings(self.c.config["null_values"]),
        )

    def _read_block(self) -> bytes:
        """The next ``rows_per_block`` lines of the file (the rest of it, at its end).

        Reads are sized from the bytes per line seen so far; what a read brings beyond
        the block's last line is kept for the next block.
        """
        assert self._handle is not None
        want = self.rows_per_block
        pieces, lines = [self._carry], self._carry.count(b"\n")
        read_size = self._block_bytes
        while lines < want:
            more = self._handle.read(read_size)
            if not more:
                break
            pieces.append(more)
            lines += more.count(b"\n")
            read_size = min(read_size * 2, 1 << 28)  # few reads even when the estimate is low
        buffer = b"".join(pieces)
        if lines > want:
            cut = _after_nth_newline(buffer, want, lines)
            buffer, self._carry = buffer[:cut], buffer[cut:]
        else:
            self._carry = b""
        if buffer:
            per_line = max(1, len(buffer) // max(1, min(lines, want)))
            self._block_bytes = int(min(1 << 28, max(1 << 16, per_line * want - len(self._carry))))
        return buffer

    def poll(self) -> SourceBatch | None:
        while not self._done:
            if self._handle is None and not self._open_next():
                return None
            data = self._read_block()
            if not data:
                self._open_next()
                continue
            first_line = self._line
            self._line += data.count(b"\n")
            path = self.files[self._file_index]
            table, dead = self._decoder.decode(data, lambda i, p=path, f=first_line: f"{p}:{f + i + 1}")
            rb = to_batch(table)
            return SourceBatch(rb, dead, raw_count=rb.num_rows + len(dead))
        return None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


class _ParquetReader(SourceReader):
    bounded = True

    def __init__(self, connector: "FileSource", files: list[str], ctx: RunContext):
        self.c = connector
        self.files = files
        self.ctx = ctx
        self._iter = self._batches()
        self._done = not files

    @property
    def exhausted(self) -> bool:
        return self._done

    def _batches(self):
        schema = pa.schema([f for f in self.c.schema])
        for path in self.files:
            try:
                parquet = pq.ParquetFile(path)
            except (pa.ArrowInvalid, OSError) as error:
                raise ConnectorError(f"cannot read Parquet file {path}: {error}") from error
            by_lower = {n.lower(): n for n in parquet.schema_arrow.names}
            names = {f.name: by_lower[f.name.lower()] for f in schema if f.name.lower() in by_lower}
            columns = list(names.values())
            row = 0
            for batch in parquet.iter_batches(batch_size=self.ctx.file_batch_size, columns=columns):
                table = pa.Table.from_batches([batch])
                yield self._conform(table, schema, names, path, row)
                row += batch.num_rows

    def _conform(self, table, schema, names, path, first_row):
        fmt = self.c.config["timestamp_format"]
        try:
            return conform_table(table, schema, fmt, names), []
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
            if table.num_rows == 0:
                raise ConnectorError(f"{path}: columns do not fit the declared schema: {error}") from error
        good, bad = isolate_failures(table.num_rows, lambda s, e: conform_table(table.slice(s, e - s), schema, fmt, names))
        dead = []
        for row, error in bad:
            raw = encode_json_lines(table.slice(row, 1)).decode().strip()
            dead.append(DeadLetter(self.c.source_name, "type", str(error).splitlines()[0], raw, f"{path}:row {first_row + row + 1}"))
        tables = [t for _, _, t in good]
        return (pa.concat_tables(tables) if tables else schema.empty_table()), dead

    def poll(self) -> SourceBatch | None:
        if self._done:
            return None
        try:
            (table, dead) = next(self._iter)
        except StopIteration:
            self._done = True
            return None
        rb = to_batch(table)
        return SourceBatch(rb, dead, raw_count=rb.num_rows + len(dead))


class _Prefetching(SourceReader):
    """Reads (and decodes) the next blocks of a bounded file reader in a background
    thread while the pipeline processes the current one: pyarrow's readers release the
    GIL, so decoding and the query run on different cores."""

    bounded = True
    _DONE = object()

    def __init__(self, inner: SourceReader, depth: int = 2):
        self.inner = inner
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._finished = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlstream-file-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and not self.inner.exhausted:
                item = self.inner.poll()
                if item is not None:
                    self._put(item)
            self._put(self._DONE)
        except BaseException as error:  # handed to the driver thread by poll()
            self._put(error)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def poll(self) -> SourceBatch | None:
        if self._finished:
            return None
        try:
            item = self._queue.get(timeout=0.005)
        except queue.Empty:
            return None
        if item is self._DONE:
            self._finished = True
            return None
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        return item

    @property
    def exhausted(self) -> bool:
        return self._finished

    def next_wakeup(self) -> float | None:
        return None  # poll() itself waits briefly for the reader thread

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.inner.close()


@register_source
class FileSource(SourceConnector):
    name = "file"
    path_options = ("path",)
    options = (
        OptionSpec("path", required=True, doc="a file, a directory or a glob"),
        OptionSpec("format", "choice", required=True, choices=_FORMATS, doc="json | csv | parquet"),
        OptionSpec("header", "bool", default=True, doc="csv: the first line names the columns"),
        OptionSpec("delimiter", "str", default=",", doc="csv field delimiter",
                   check=lambda v: None if len(v) == 1 else "must be one character"),
        NULL_VALUES_OPTION,
    )

    def open(self, ctx: RunContext) -> SourceReader:
        what = f"source '{self.source_name}': path"
        path = resolve_path(self.config["path"], ctx.base_dir, ctx.allowed_paths, what=what, pattern=True)
        files = [resolve_path(f, ctx.base_dir, ctx.allowed_paths, what=what) for f in resolve_files(path)]
        if not files:
            raise ConnectorError(f"source '{self.source_name}': no file matches path '{path}'")
        if self.config["format"] == "parquet":
            return _Prefetching(_ParquetReader(self, files, ctx))
        return _Prefetching(_TextFileReader(self, files, ctx))

    def describe(self) -> str:
        return f"file({self.config['format']}: {self.config['path']})"


# -- sink ------------------------------------------------------------------------------------


class _AppendingWriter(SinkWriter):
    """JSON lines / CSV: each batch is appended (and flushed) as a whole."""

    def __init__(self, path: str, fmt: str, schema: pa.Schema, append: bool, delimiter: str):
        self.path = path
        self.fmt = fmt
        self.schema = schema
        self.delimiter = delimiter
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        existing = append and os.path.exists(path) and os.path.getsize(path) > 0
        self._handle = open(path, "ab" if append else "wb")
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
        self._handle.flush()
        os.fsync(self._handle.fileno())
        return written

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()


class _ParquetWriter(SinkWriter):
    """Row groups of up to ``row_group_rows``; a file becomes visible only when complete."""

    def __init__(self, path: str, schema: pa.Schema, ctx: RunContext, rows_per_file: int | None,
                 roll_interval_us: int | None, append: bool):
        self.path = path
        self.schema = schema
        self.clock = ctx.clock
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
        if self.rolling:
            os.makedirs(path, exist_ok=True)
            parts = [n for n in os.listdir(path) if n.startswith("part-") and n.endswith(".parquet")]
            if not append:
                for name in parts:
                    os.remove(os.path.join(path, name))
                parts = []
            self._part = 1 + max((int(n[5:10]) for n in parts if n[5:10].isdigit()), default=-1)
        else:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)

    def _open(self) -> None:
        if self.rolling:
            self._final = os.path.join(self.path, f"part-{self._part:05d}.parquet")
            self._part += 1
        else:
            self._final = self.path
        directory, name = os.path.split(self._final)
        self._temp = os.path.join(directory, f".{name}.{os.getpid()}.inprogress")
        self._writer = pq.ParquetWriter(self._temp, self.schema)
        self._file_rows = 0

    def _commit(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        os.replace(self._temp, self._final)
        self._writer = None
        self._part_started_us = None
        self._committed = self._written

    def _flush_pending(self) -> None:
        if not self._pending:
            return
        if self._writer is None:
            self._open()
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        self._file_rows += table.num_rows
        self._pending, self._pending_rows = [], 0

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self._part_started_us is None:
            self._part_started_us = self.clock.now_us()
        self._written += batch.num_rows
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= self.row_group_rows:
            self._flush_pending()
        self._maybe_roll()

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
        self._flush_pending()
        if self._writer is None and not self.rolling:
            self._open()  # an empty result is still a valid (empty) Parquet file
        self._commit()


@register_sink
class FileSink(SinkConnector):
    name = "file"
    path_options = ("path",)
    options = (
        OptionSpec("path", required=True, doc="output file (or directory for rolled Parquet)"),
        OptionSpec("format", "choice", required=True, choices=_FORMATS, doc="json | csv | parquet"),
        OptionSpec("mode", "choice", default="overwrite", choices=("overwrite", "append")),
        OptionSpec("delimiter", "str", default=",", check=lambda v: None if len(v) == 1 else "must be one character"),
        OptionSpec("rows_per_file", "int", doc="parquet: roll to a new part file after this many rows",
                   check=lambda v: None if v > 0 else "must be > 0"),
        OptionSpec("roll_interval", "duration", doc="parquet: roll to a new part file this often"),
    )

    def validate(self, where: Location | None) -> None:
        fmt = self.config["format"]
        rolling = self.config["rows_per_file"] is not None or self.config["roll_interval"] is not None
        if rolling and fmt != "parquet":
            raise ConnectorError("rows_per_file / roll_interval apply to format = 'parquet' only", location=where)
        if fmt == "parquet" and self.config["mode"] == "append" and not rolling:
            raise ConnectorError(
                "a single Parquet file cannot be appended to",
                location=where,
                hint="add rows_per_file or roll_interval to write part files into a directory",
            )

    def open(self, schema: pa.Schema, ctx: RunContext) -> SinkWriter:
        path = resolve_path(self.config["path"], ctx.base_dir, ctx.allowed_paths, what=f"sink '{self.sink_name}': path")
        fmt = self.config["format"]
        append = self.config["mode"] == "append"
        if fmt == "csv":
            nested = [f.name for f in schema if is_nested(f.type)]
            if nested:
                raise ConnectorError(
                    f"sink '{self.sink_name}': CSV cannot hold nested column(s) {', '.join(nested)}",
                    hint="use format = 'json' or 'parquet', or select CAST(col AS VARCHAR)",
                )
        if fmt == "parquet":
            return _ParquetWriter(
                path, schema, ctx, self.config["rows_per_file"], self.config["roll_interval"], append
            )
        return _AppendingWriter(path, fmt, schema, append, self.config["delimiter"])

    def describe(self) -> str:
        return f"file({self.config['format']}: {self.config['path']})"
