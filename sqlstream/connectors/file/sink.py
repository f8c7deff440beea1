"""``connector = 'file'`` as a sink: JSON lines, CSV or Parquet, made visible only
when complete (see :mod:`sqlstream.connectors.durable_files`); under checkpoints, one
epoch at a time, exactly once (see :mod:`sqlstream.connectors.file.epoch_writers`).
A worker's run of one partition (``RunContext.partition``) writes ``path/partition=N/``,
each partition its own part files and manifest (docs/scale-out.md)."""

from __future__ import annotations

import logging
import os

import pyarrow as pa

from sqlstream.connectors.base import RunContext, SinkConnector, SinkWriter
from sqlstream.connectors.encode import is_nested
from sqlstream.connectors.file.epoch_writers import EpochPartsWriter
from sqlstream.connectors.file.source import FORMATS
from sqlstream.connectors.file.writers import LinesWriter, ParquetWriter
from sqlstream.connectors.options import OptionSpec
from sqlstream.connectors.registry import register_sink
from sqlstream.errors import ConnectorError, Location
from sqlstream.paths import resolve_path

__all__ = ["FileSink"]

LOG = logging.getLogger("sqlstream.file")


@register_sink
class FileSink(SinkConnector):
    name = "file"
    path_options = ("path",)
    options = (
        OptionSpec("path", required=True, doc="output file (or directory for rolled Parquet)"),
        OptionSpec("format", "choice", required=True, choices=FORMATS, doc="json | csv | parquet"),
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
                hint="add rows_per_file or roll_interval to commit part files as they complete, or run with "
                     "checkpoints (--checkpoint DIR): each checkpoint then commits a part",
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
        if ctx.partition is not None:  # a worker's partition: its own part-file series and manifest
            if not ctx.checkpointing:
                raise ConnectorError(f"sink '{self.sink_name}': a partition's file output needs checkpoints",
                                     hint="run workers with --checkpoint DIR")
            path = os.path.join(path, ctx.partition.label)
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
        if ctx.checkpointing:  # exactly once: a directory of parts, each checkpoint's visible when it commits
            return EpochPartsWriter(path, fmt, schema, ctx, self.config["rows_per_file"], self.config["roll_interval"],
                                    append, self.config["delimiter"])
        if fmt == "parquet":
            return ParquetWriter(
                path, schema, ctx, self.config["rows_per_file"], self.config["roll_interval"], append
            )
        return LinesWriter(path, fmt, schema, append, self.config["delimiter"])

    def describe(self) -> str:
        return f"file({self.config['format']}: {self.config['path']})"
