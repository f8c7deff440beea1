"""JSON lines and CSV files: whole lines read in blocks, each block decoded vectorized;
the position after each block is the byte just past its last line (see
:mod:`sqlstream.connectors.file.positions`)."""

from __future__ import annotations

import io
import os
import threading
import time

from sqlstream.batches import to_batch
from sqlstream.connectors.base import RunContext, SourceBatch, SourceConnector, SourceReader
from sqlstream.connectors.decode import CsvDecoder, JsonDecoder
from sqlstream.connectors.file.positions import finished_file, resume_plan
from sqlstream.connectors.options import null_spellings
from sqlstream.errors import ConnectorError

__all__ = ["TextFileReader", "SETTLE_S"]

#: seconds a file must have stopped growing before its unterminated last line is read as a record
SETTLE_S = 1.0


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


class TextFileReader(SourceReader):
    """JSON lines / CSV: reads whole lines in blocks and decodes each block vectorized.

    A file is read once, up to its end. A line is a record only once its newline has
    been read; an unterminated last line is held back until the file grows again or is
    final: it has not grown for :data:`SETTLE_S` (its modification time is that old, or
    its size stayed the same that long while the reader waited). A file that stops
    growing mid-line for longer than that still has its last line read as a record."""

    bounded = True

    def __init__(self, connector: SourceConnector, files: list[str], ctx: RunContext, stop: threading.Event):
        self.c = connector
        plan = resume_plan(files, ctx.start_position, connector.source_name)
        self.files = plan.files  # in reading order: a resumed run reads its unfinished file first
        self._sorted_index = {path: i for i, path in enumerate(files)}
        self._done_files = plan.done  # positions: the files read to their end
        self._resume_at = (plan.offset, plan.line)  # where the first file is taken up
        self._position = dict(ctx.start_position) if ctx.start_position else {"done": [], "file": None, "offset": 0, "line": 0}
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
        self._done = not self.files

    @property
    def exhausted(self) -> bool:
        return self._done

    def _open_next(self) -> bool:
        if self._handle is not None:
            read = self._handle.tell() - len(self._carry)
            self._handle.close()
            self._handle = None
            self._done_files.append(finished_file(self.files[self._file_index], read))
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
        offset, line = self._resume_at
        if offset:
            self._resume_at = (0, 0)
            self._handle.seek(offset)  # past the header too: the decoder has its names already
            self._line = line
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
        missing = [f.name for f in self.c.schema if f.name not in names]
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
                self._position = {"done": list(self._done_files), "file": None, "offset": 0, "line": 0}
                return None
            data = self._read_block()
            if not data:
                if not self._open_next():
                    self._position = {"done": list(self._done_files), "file": None, "offset": 0, "line": 0}
                continue
            first_line = self._line
            self._line += data.count(b"\n")
            path = self.files[self._file_index]
            table, dead = self._decoder.decode(data, lambda i, p=path, f=first_line: f"{p}:{f + i + 1}")
            self._position = {
                "done": list(self._done_files), "file": path, "file_index": self._sorted_index.get(path),
                "offset": self._handle.tell() - len(self._carry), "line": self._line,
            }
            rb = to_batch(table)
            return SourceBatch(rb, dead, raw_count=rb.num_rows + len(dead), raw_bytes=len(data))
        return None

    def position(self) -> dict | None:
        """After the last block ``poll`` returned: the files done, and the byte just past
        the block's last line in the file it came from."""
        return self._position

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
