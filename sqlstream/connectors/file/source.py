"""``connector = 'file'`` as a source: the files a path names, read once, in name order.

JSON lines and CSV go through :class:`TextFileReader`, Parquet through
:class:`ParquetReader`; either is wrapped in a :class:`PrefetchingReader` that reads
the next blocks on a thread while the pipeline works on the current one.
"""

from __future__ import annotations

import glob
import os
import queue
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq

from sqlstream.batches import to_batch
from sqlstream.connectors.base import RunContext, SourceBatch, SourceConnector, SourceReader
from sqlstream.connectors.dead_letters import DeadLetter
from sqlstream.connectors.decode import conform_table
from sqlstream.connectors.encode import encode_json_lines
from sqlstream.connectors.file.binary_reader import BinaryFilesReader, check_binary_columns
from sqlstream.connectors.file.positions import finished_file, resume_plan
from sqlstream.connectors.file.text_reader import TextFileReader
from sqlstream.connectors.options import NULL_VALUES_OPTION, OptionSpec
from sqlstream.connectors.registry import register_source
from sqlstream.errors import ConnectorError, Location
from sqlstream.failure_isolation import isolate_failures
from sqlstream.paths import resolve_path

__all__ = ["FileSource", "FORMATS", "SOURCE_FORMATS", "resolve_files", "ParquetReader", "PrefetchingReader"]

FORMATS = ("json", "csv", "parquet")  # what the sink writes; the source also reads "binary"
SOURCE_FORMATS = FORMATS + ("binary",)


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


class ParquetReader(SourceReader):
    bounded = True

    def __init__(self, connector: SourceConnector, files: list[str], ctx: RunContext):
        self.c = connector
        plan = resume_plan(files, ctx.start_position, connector.source_name, count_rows=True)
        self.files = plan.files  # in reading order: a resumed run reads its unfinished file first
        self._sorted_index = {path: i for i, path in enumerate(files)}
        self._start_row = plan.offset  # of the first file
        self._done_files = plan.done
        self._position = dict(ctx.start_position) if ctx.start_position else {"done": [], "file": None, "row": 0}
        self.ctx = ctx
        self._iter = self._batches()
        self._done = not self.files

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
            row, groups, skip = self._start(parquet)
            batches = parquet.iter_batches(batch_size=self.ctx.file_batch_size, columns=columns, row_groups=groups)
            for batch in batches if groups else ():
                if skip:
                    batch, skip = batch.slice(min(skip, batch.num_rows)), max(0, skip - batch.num_rows)
                    if batch.num_rows == 0:
                        continue
                table = pa.Table.from_batches([batch])
                item = self._conform(table, schema, names, path, row)
                row += batch.num_rows
                self._position = {
                    "done": list(self._done_files), "file": path, "file_index": self._sorted_index.get(path), "row": row,
                }
                yield item
            self._done_files.append(finished_file(path, parquet.metadata.num_rows))
        self._position = {"done": list(self._done_files), "file": None, "row": 0}

    def _start(self, parquet: pq.ParquetFile) -> tuple[int, list[int], int]:
        """Where to take up a file: its first row, the row groups from the one holding
        it on (from the metadata: skipped groups are not decoded), and the rows of that
        group before it. Only the first file of a resumed run starts past row 0."""
        start, self._start_row = self._start_row, 0
        metadata, first_group, first_row = parquet.metadata, 0, 0
        while first_group < metadata.num_row_groups and first_row + metadata.row_group(first_group).num_rows <= start:
            first_row += metadata.row_group(first_group).num_rows
            first_group += 1
        return start, list(range(first_group, metadata.num_row_groups)), start - first_row

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

    def position(self) -> dict | None:
        """After the last batch ``poll`` returned: the files done, and the rows of the
        current file returned."""
        return self._position


class PrefetchingReader(SourceReader):
    """Reads (and decodes) the next blocks of a bounded file reader in a background
    thread while the pipeline processes the current one: pyarrow's readers release the
    GIL, so decoding and the query run on different cores.

    Each block goes through the queue with the inner reader's position just after it,
    so ``position`` is that of the rows ``poll`` returned, not of what the thread read
    ahead."""

    _DONE = object()

    def __init__(self, inner: SourceReader, stop: threading.Event, depth: int = 2):
        self.inner = inner
        self.bounded = inner.bounded  # an unbounded inner reader (watching a folder) is polled when it says
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._finished = False
        self._stop = stop  # shared with ``inner``, which may wait for a file to grow
        self._position = inner.position()
        self._thread = threading.Thread(target=self._run, name="sqlstream-file-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and not self.inner.exhausted:
                item = self.inner.poll()
                if item is not None:
                    self._put((item, self.inner.position()))
                elif not self.inner.exhausted:  # nothing yet: wait until the reader expects more
                    wakeup = self.inner.next_wakeup()
                    self._stop.wait(min(0.05, max(0.001, (wakeup or 0) - time.monotonic())))
            self._put((self._DONE, self.inner.position()))
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
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        item, self._position = item
        if item is self._DONE:
            self._finished = True
            return None
        return item

    def position(self) -> dict | None:
        return self._position

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
    replayable = True
    path_options = ("path",)
    options = (
        OptionSpec("path", required=True, doc="a file, a directory or a glob"),
        OptionSpec("format", "choice", required=True, choices=SOURCE_FORMATS,
                   doc="json | csv | parquet | binary (one row per file: path, content, size, mtime)"),
        OptionSpec("header", "bool", default=True, doc="csv: the first line names the columns"),
        OptionSpec("watch", "bool", default=False,
                   doc="binary: keep listing the path and read files as they appear (an unbounded source)"),
        OptionSpec("poll_interval", "duration", default=1_000_000, doc="watch: how often the path is listed again"),
        OptionSpec("settle", "duration", default=500_000,
                   doc="watch: a file is read once it has not been modified for this long"),
        OptionSpec("delimiter", "str", default=",", doc="csv field delimiter",
                   check=lambda v: None if len(v) == 1 else "must be one character"),
        NULL_VALUES_OPTION,
    )

    @property
    def watching(self) -> bool:
        return bool(self.config["watch"])

    @property
    def bounded(self) -> bool:
        return not self.watching

    def validate(self, where: Location | None) -> None:
        if self.config["format"] == "binary":
            check_binary_columns(self.schema, where)
        elif self.watching:
            raise ConnectorError("watch = true applies to format = 'binary' only", location=where,
                                 hint="JSON lines / CSV files are read as they grow already (a file being "
                                      "appended to is followed to its end)")

    def check_table(self, where: Location | None) -> None:
        if self.watching:
            raise ConnectorError("a TABLE is read whole, but watch = true never ends", location=where,
                                 hint="use CREATE SOURCE for a folder that files keep arriving in")

    def open(self, ctx: RunContext) -> SourceReader:
        what = f"source '{self.source_name}': path"
        path = resolve_path(self.config["path"], ctx.base_dir, ctx.allowed_paths, what=what, pattern=True)

        def list_files() -> list[str]:
            return [resolve_path(f, ctx.base_dir, ctx.allowed_paths, what=what) for f in resolve_files(path)]

        files = list_files()
        if not files and not self.watching:
            raise ConnectorError(f"source '{self.source_name}': no file matches path '{path}'")
        stop = threading.Event()
        fmt = self.config["format"]
        if fmt == "binary":
            inner = BinaryFilesReader(self, list_files, ctx, watch=self.watching,
                                      poll_interval_s=self.config["poll_interval"] / 1e6,
                                      settle_s=self.config["settle"] / 1e6)
            return PrefetchingReader(inner, stop)
        if fmt == "parquet":
            return PrefetchingReader(ParquetReader(self, files, ctx), stop)
        return PrefetchingReader(TextFileReader(self, files, ctx, stop), stop)

    def describe(self) -> str:
        return f"file({self.config['format']}: {self.config['path']})"
