"""``connector = 'postgres'`` as a lookup TABLE: the whole table, read at the start of a
run into the lookup join's index, and again every ``refresh_interval`` if set (the
runtime reads it on a background thread and swaps the join's index between two driver
steps; see :mod:`sqlstream.runtime.table_refresh`)."""

from __future__ import annotations

import pyarrow as pa

from sqlstream.connectors.base import RunContext, SourceBatch, SourceConnector, SourceReader
from sqlstream.connectors.options import OptionSpec
from sqlstream.connectors.postgres.sink import CONNECTION_OPTIONS
from sqlstream.connectors.postgres.table import TableName, connect, existing_columns
from sqlstream.connectors.postgres.table_read import read_table
from sqlstream.connectors.registry import register_source
from sqlstream.errors import ConnectorError, Location

__all__ = ["PostgresSource", "PostgresTableReader"]


@register_source
class PostgresSource(SourceConnector):
    name = "postgres"
    options = CONNECTION_OPTIONS + (
        OptionSpec("refresh_interval", "duration", doc="re-read the table this often while the run goes on ('30s')",
                   check=lambda us: None if us >= 10_000 else "expected at least '10ms'"),
    )
    can_back_table = True

    @property
    def refresh_interval_us(self) -> int | None:
        return self.config.get("refresh_interval")

    def check_table(self, where: Location | None) -> None:
        return None

    def open(self, ctx: RunContext) -> SourceReader:
        return PostgresTableReader(self.source_name, self.schema, self.config)

    def describe(self) -> str:
        every = self.config.get("refresh_interval")
        return f"postgres table {self.config['table']}" + (f", re-read every {every / 1e6:g}s" if every else "")


class PostgresTableReader(SourceReader):
    """Returns the whole table as one batch of the declared schema, then is exhausted."""

    bounded = True

    def __init__(self, source_name: str, schema: pa.Schema, config: dict):
        self.owner = f"table '{source_name}'"
        self.schema = schema
        self.name = TableName(config.get("schema"), config["table"])
        self.url = config["url"]
        self.done = False

    def poll(self) -> SourceBatch | None:
        if self.done:
            return None
        self.done = True
        batch = self._read()
        return SourceBatch(batch, raw_count=batch.num_rows)

    def _read(self) -> pa.RecordBatch:
        with connect(self.url, self.owner) as conn:
            columns = existing_columns(conn, self.name)
            if columns is None:
                raise ConnectorError(f"{self.owner}: PostgreSQL table {self.name} does not exist")
            missing = [n for n in self.schema.names if n not in columns]
            if missing:
                raise ConnectorError(f"{self.owner}: PostgreSQL table {self.name} has no column '{missing[0]}'",
                                     hint=f"its columns: {', '.join(columns)}")
            return read_table(conn, self.name, self.schema, columns, self.owner)

    @property
    def exhausted(self) -> bool:
        return self.done
