"""``connector = 'postgres'`` as a lookup TABLE: the whole table, read once at the start
of a run into the lookup join's index (no refresh while the run goes on)."""

from __future__ import annotations

import pyarrow as pa

from sqlstream.connectors.base import RunContext, SourceBatch, SourceConnector, SourceReader
from sqlstream.connectors.postgres.sink import CONNECTION_OPTIONS
from sqlstream.connectors.postgres.table import TableName, connect, existing_columns
from sqlstream.connectors.postgres.types import quote_ident
from sqlstream.connectors.registry import register_source
from sqlstream.errors import ConnectorError, Location

__all__ = ["PostgresSource", "PostgresTableReader"]


@register_source
class PostgresSource(SourceConnector):
    name = "postgres"
    options = CONNECTION_OPTIONS
    can_back_table = True

    def check_table(self, where: Location | None) -> None:
        return None

    def open(self, ctx: RunContext) -> SourceReader:
        return PostgresTableReader(self.source_name, self.schema, self.config)

    def describe(self) -> str:
        return f"postgres table {self.config['table']}"


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
            select = ", ".join(quote_ident(n) for n in self.schema.names)
            rows = conn.execute(f"SELECT {select} FROM {self.name.sql}").fetchall()
        arrays = []
        for i, field in enumerate(self.schema):
            values = [row[i] for row in rows]
            try:
                arrays.append(pa.array(values, field.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as error:
                raise ConnectorError(
                    f"{self.owner}: column '{field.name}' of {self.name} ({columns[field.name][1]}) does not fit "
                    f"its declared type: {error}"
                ) from error
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    @property
    def exhausted(self) -> bool:
        return self.done
