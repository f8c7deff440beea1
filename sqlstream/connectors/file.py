"""``connector = 'file'``: JSON lines, CSV and Parquet files as a bounded source or a sink.

Source: ``path`` is a file, a directory or a glob; files are read once, in sorted name
order, in blocks of about ``file_batch_size`` rows (Parquet: record batches of that
many rows). A line is never split: an unterminated last line is held back until more
bytes arrive or the file has stopped growing (:data:`SETTLE_S`).

Sink: output is written under a hidden temporary name ``.<name>.<pid>.inprogress``
and renamed into place when complete, so no reader ever sees a half-written file and
a crash never destroys the previous output: ``mode = 'overwrite'`` replaces the old
file (or old Parquet parts) only when the run ends cleanly; ``mode = 'append'``
appends JSON/CSV at batch boundaries; rolled Parquet (``rows_per_file`` /
``roll_interval``) renames each part into place as it completes. Temporary files
left by dead processes are removed when a sink opens.
"""

from __future__ import annotations

import glob
import io
import logging
import os
import queue
import re
import threading
import time
from typing import Callable

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from sqlstream.batches import to_batch
from sqlstream.connectors.base import (
    METADATA_COLUMNS,
    RunContext,
    SinkConnector,
    SinkWriter,
    SourceBatch,
    SourceConnector,
    SourceReader,
    register_sink,
    register_source,
)
from sqlstream.connectors.dead_letters import DeadLetter
from sqlstream.connectors.decode import CsvDecoder, JsonDecoder, conform_table
from sqlstream.connectors.encode import encode_json_lines, is_nested
from sqlstream.connectors.options import NULL_VALUES_OPTION, OptionSpec, null_spellings
from sqlstream.errors import ConnectorError, Location
from sqlstream.failure_isolation import isolate_failures
from sqlstream.paths import resolve_path

__all__ = ["FileSource", "FileSink", "resolve_files", "remove_stale_temp_files", "SETTLE_S"]

LOG = logging.getLogger("sqlstream.file")

_FORMATS = ("json", "csv", "parquet")

#: seconds a file must have stopped growing before its unterminated last line is read as a record
SETTLE_S = 1.0


def resolve_files(path: str) -> list[str]:
    """Files named by a path, directory or glob, in sorted name order.

    Directories and globs are listed lazily (``os.scandir``, ``glob.iglob``), one entry
    at a time, so a signal handler can stop a long listing at any point."""
    if os.path.isdir(path):
        with os.scandir(path) as entries:
            return sorted(e.path for e in entries if not e.name.startswith((".", "_")) and e.is_file())
    if os.path.isfile(path):  # a name that exists is taken literally, even with [ or *
        return [path]
    if any(ch in path for ch in "*?["):
        return sorted(p for p in glob.iglob(path, recursive=True) if os.path.isfile(p))
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
    """JSON lines / CSV: reads whole lines in blocks and decodes each block vectorized.

    A file is read once, up to its end. A line is a record only once its newline has
    been read; an unterminated last line is held back until the file grows again or is
    final: it has not grown for :data:`SETTLE_S` (its modification time is that old, or
    its size stayed the same that long while the reader waited). A file that stops
    growing mid-line for longer than that still has its last line read as a record."""

    bounded = True

    def __init__(self, connector: "FileSource", files: list[str], ctx: RunContext, stop: threading.Event):
        self.c = connector
        self.files = files
        self.ctx = ctx
        self.rows_per_block = ctx.file_batch_size
        self._stop = stop  # set when the run stops: no more waiting for a file to grow
        self._file_index = -1
        self._handle: io.BufferedReader | None = None
        self._line = 0  # 0-based line number of the next block's first line
        self._block_bytes = 1 << 20
        self._carry = b""  # bytes read past the last block's final line
        self._final = False  # the current file's unterminated last line was taken: read no further
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
        self._final = False
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
            header = self._whole_line()
            self._line = 1
            names = self._header_names(header, delimiter) if header else [f.name for f in schema]
            self._final = not header  # a 0-byte file is an empty input, header or not
        else:
            names = [f.name for f in schema]
        return CsvDecoder(
            schema, self.c.source_name, names, delimiter, self.c.config["timestamp_format"],
            null_spellings(self.c.config["null_values"]),
        )

    def _header_names(self, header: bytes, delimiter: str) -> list[str]:
        """The column names of a CSV header line; every declared column must be among them."""
        # utf-8-sig: a byte order mark (Excel writes one) is not part of the first name
        text = header.decode("utf-8-sig", "replace").rstrip("\r\n")
        names = [n.strip().strip('"').lower() for n in text.split(delimiter)]
        missing = [f.name for f in self.c.schema if f.name not in names and f.name not in METADATA_COLUMNS]
        if missing:
            raise ConnectorError(
                f"source '{self.c.source_name}': the CSV header of {self.files[self._file_index]} "
                f"has no column {', '.join(repr(m) for m in missing)}",
                hint=f"its columns: {', '.join(names)}; or set header = false to read columns by position",
            )
        return names

    def _whole_line(self) -> bytes:
        """The next line with its newline, or the file's unterminated last line once final."""
        line = self._handle.readline()
        while not line.endswith(b"\n") and not self._wait_for_growth():
            line += self._handle.readline()
        return line

    def _wait_for_growth(self) -> bool:
        """At the end of the file, mid-line: wait until it grows (False: read on) or is
        final (True: it has not grown for SETTLE_S, or the run is stopping)."""
        assert self._handle is not None
        position = self._handle.tell()
        waited_since = time.monotonic()
        while True:
            stat = os.fstat(self._handle.fileno())
            if stat.st_size > position:
                return False
            if time.time() - stat.st_mtime >= SETTLE_S or time.monotonic() - waited_since >= SETTLE_S:
                self._final = True
                return True
            if self._stop.wait(0.005):
                return True

    def _read_block(self) -> bytes:
        """The next ``rows_per_block`` whole lines of the file (fewer at its end).

        Reads are sized from the bytes per line seen so far; what a read brings beyond
        the block's last line is kept for the next block, and so is an unterminated
        last line, until more bytes arrive or the file is final.
        """
        assert self._handle is not None
        if self._final:
            return b""
        want = self.rows_per_block
        pieces, lines, size = [self._carry], self._carry.count(b"\n"), len(self._carry)
        read_size = self._block_bytes
        while lines < want:
            more = self._handle.read(read_size)
            if more:
                pieces.append(more)
                lines += more.count(b"\n")
                size += len(more)
                read_size = min(read_size * 2, 1 << 28)  # few reads even when the estimate is low
                continue
            if lines or not size or self._wait_for_growth():
                break  # whole lines to hand on, the end of the file at a line end, or a final last line
        buffer = b"".join(pieces)
        if lines > want:
            cut = _after_nth_newline(buffer, want, lines)
        elif lines and not buffer.endswith(b"\n"):
            cut = buffer.rindex(b"\n") + 1  # hold the unterminated last line back
        else:
            cut = len(buffer)
        buffer, self._carry = buffer[:cut], buffer[cut:]
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

    def __init__(self, inner: SourceReader, stop: threading.Event, depth: int = 2):
        self.inner = inner
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._finished = False
        self._stop = stop  # shared with ``inner``, which may wait for a file to grow
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
    can_back_table = True
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
        stop = threading.Event()
        if self.config["format"] == "parquet":
            return _Prefetching(_ParquetReader(self, files, ctx), stop)
        return _Prefetching(_TextFileReader(self, files, ctx, stop), stop)

    def describe(self) -> str:
        return f"file({self.config['format']}: {self.config['path']})"


# -- sink ------------------------------------------------------------------------------------

#: ``.<name>.<pid>.inprogress``: a file being written by process ``pid``, renamed to ``<name>`` when complete
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>[0-9]+)\.inprogress$")


def _temp_path(final: str) -> str:
    """The hidden name ``final`` is written under by this process until it is complete."""
    directory, name = os.path.split(final)
    return os.path.join(directory, f".{name}.{os.getpid()}.inprogress")


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a process id we wrote: leave it alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temp_files(directory: str, owned: Callable[[str], bool]) -> list[str]:
    """Remove the temporary files (``.<name>.<pid>.inprogress``) in ``directory`` whose
    ``name`` this sink writes (``owned``) and whose process is no longer alive: what a
    crashed or killed run left behind. Returns the paths removed."""
    removed = []
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        return removed
    with entries:
        for entry in entries:
            match = _TEMP_NAME.match(entry.name)
            if match is None or not owned(match["name"]) or _process_alive(int(match["pid"])):
                continue
            try:
                os.remove(entry.path)
            except FileNotFoundError:
                continue
            removed.append(entry.path)
    if removed:
        LOG.info("removed %d temporary file(s) left by runs that did not finish: %s", len(removed), ", ".join(removed))
    return removed


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _publish(temp: str, final: str) -> None:
    """Make the complete file ``temp`` durable and rename it onto ``final`` in one step."""
    fd = os.open(temp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, final)
    _fsync_directory(os.path.dirname(final))


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


class _LinesWriter(SinkWriter):
    """JSON lines / CSV. ``append``: each batch is appended (and flushed) to ``path`` as a
    whole. Otherwise the rows go to a hidden temporary file that replaces ``path`` at a
    clean close; a failed or killed run leaves the previous output as it was."""

    def __init__(self, path: str, fmt: str, schema: pa.Schema, append: bool, delimiter: str):
        self.path = path
        self.fmt = fmt
        self.schema = schema
        self.delimiter = delimiter
        directory, name = os.path.split(path)
        os.makedirs(directory or ".", exist_ok=True)
        remove_stale_temp_files(directory or ".", name.__eq__)
        self._temp = None if append else _temp_path(path)
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
            _publish(self._temp, self.path)  # syncs the file, renames it, syncs the directory

    def abort(self) -> None:
        if self._temp is None:
            self.close()  # appended rows stay
            return
        if not self._handle.closed:
            self._handle.close()
            _remove(self._temp)


def _part_name(number: int) -> str:
    return f"part-{number:05d}.parquet"


def _is_part(name: str) -> bool:
    return name.startswith("part-") and name.endswith(".parquet")


class _ParquetWriter(SinkWriter):
    """Row groups of up to ``row_group_rows``; a file becomes visible only when complete.

    Rolled parts are numbered after the parts already in the directory. Overwriting
    removes the old parts only at a clean close (and renumbers the new ones from
    ``part-00000``), so a run that fails or is killed leaves them in place."""

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
        self._temp = _temp_path(self._final)
        self._writer = pq.ParquetWriter(self._temp, self.schema)
        self._file_rows = 0

    def _commit(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        _publish(self._temp, self._final)
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
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))
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
        self._flush_pending()
        if self._writer is None and not self.rolling:
            self._open()  # an empty result is still a valid (empty) Parquet file
        self._commit()
        if self._old_parts:
            self._replace_old_parts()

    def _replace_old_parts(self) -> None:
        """Overwrite, at a clean close: remove the earlier runs' parts, then number this
        run's parts from part-00000 (in ascending order, so no name is taken twice)."""
        for old in self._old_parts:
            _remove(old)
        self._old_parts = []
        for number, part in enumerate(self._new_parts):
            target = os.path.join(self.path, _part_name(number))
            if part != target:
                os.replace(part, target)
        _fsync_directory(self.path)

    def abort(self) -> None:
        """The run failed: drop the file in progress; committed parts and old parts stay."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            _remove(self._temp)
        self._pending, self._pending_rows = [], 0
        self._old_parts = []


@register_sink
class FileSink(SinkConnector):
    name = "file"
    path_options = ("path",)
    options = (
        OptionSpec("path", required=True, doc="output file (or directory for rolled Parquet)"),
        OptionSpec("format", "choice", required=True, choices=_FORMATS, doc="json | csv | parquet"),
        OptionSpec("mode", "choice", choices=("overwrite", "append"),
                   doc="overwrite (default; append when a source acknowledges its input) | append"),
        OptionSpec("delimiter", "str", default=",", check=lambda v: None if len(v) == 1 else "must be one character"),
        OptionSpec("rows_per_file", "int", doc="parquet: roll to a new part file after this many rows",
                   check=lambda v: None if v > 0 else "must be > 0"),
        OptionSpec("roll_interval", "duration", doc="parquet: roll to a new part file this often"),
    )

    def _rolling(self) -> bool:
        return self.config["rows_per_file"] is not None or self.config["roll_interval"] is not None

    def validate(self, where: Location | None) -> None:
        fmt = self.config["format"]
        rolling = self._rolling()
        if rolling and fmt != "parquet":
            raise ConnectorError("rows_per_file / roll_interval apply to format = 'parquet' only", location=where)
        if fmt == "parquet" and self.config["mode"] == "append" and not rolling:
            raise ConnectorError(
                "a single Parquet file cannot be appended to",
                location=where,
                hint="add rows_per_file or roll_interval to write part files into a directory",
            )

    def check_inputs(self, acknowledging: tuple[str, ...], where: Location | None) -> None:
        """A source that acknowledges its input (JetStream) does not deliver again what an
        earlier run's output holds, and delivers no more than its unacknowledged limit
        until rows are committed: refuse the combinations that would lose rows or stall."""
        if not acknowledging:
            return
        sources = f"source{'s' if len(acknowledging) > 1 else ''} {', '.join(repr(n) for n in acknowledging)}"
        if self.config["format"] == "parquet" and not self._rolling():
            raise ConnectorError(
                f"sink '{self.sink_name}': a single Parquet file is committed only when the run ends, but "
                f"{sources} acknowledges its input only once rows are committed: delivery would stall",
                location=where,
                hint="add rows_per_file or roll_interval to commit part files as they complete",
            )
        if self.config["mode"] == "overwrite":
            raise ConnectorError(
                f"sink '{self.sink_name}': mode = 'overwrite' would lose rows: {sources} acknowledges its input, "
                "so rows acknowledged by an earlier run are only in that run's output",
                location=where,
                hint="use mode = 'append' (the default when a source acknowledges its input)",
            )

    def open(self, schema: pa.Schema, ctx: RunContext) -> SinkWriter:
        path = resolve_path(self.config["path"], ctx.base_dir, ctx.allowed_paths, what=f"sink '{self.sink_name}': path")
        fmt = self.config["format"]
        self.check_inputs(ctx.acknowledging_sources, None)
        append = self.config["mode"] == "append"
        if self.config["mode"] is None and ctx.acknowledging_sources:
            append = True
            LOG.warning(
                "sink '%s': appending to %s (no mode given, and %s acknowledges its input: rows acknowledged "
                "by earlier runs are only in their output)", self.sink_name, path,
                ", ".join(repr(n) for n in ctx.acknowledging_sources),
            )
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
        return _LinesWriter(path, fmt, schema, append, self.config["delimiter"])

    def describe(self) -> str:
        return f"file({self.config['format']}: {self.config['path']})"
