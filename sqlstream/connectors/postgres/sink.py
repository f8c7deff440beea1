"""``connector = 'postgres'`` as a sink: rows into a PostgreSQL table.

Append-only results are bulk-loaded with ``COPY … FROM STDIN``: in the binary format
when every column has exactly the type its values take in binary (see
:mod:`~sqlstream.connectors.postgres.binary`; about twice as fast), else as CSV. Updating
results (``__op`` first) keep the table equal to the current result, one transaction
per flushed batch:

* with a key (``primary_key``, or the query's key): the last change of each key in the
  batch wins — ``INSERT … ON CONFLICT (key) DO UPDATE`` for ``+I``/``+U``, ``DELETE``
  for ``-D``/``-U``;
* without one: the table is a multiset — rows a batch adds are inserted, rows it takes
  back delete one equal row each.

A batch PostgreSQL rejects is bisected (each half in a savepoint) until the rows it
rejects stand alone; those become dead letters (reason ``sink``) and the rest commit.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa

from sqlstream.connectors.base import RunContext, SinkConnector, SinkWriter
from sqlstream.connectors.dead_letters import rows_as_dead_letters
from sqlstream.connectors.options import OptionSpec
from sqlstream.connectors.postgres.binary import binary_copy, binary_typname
from sqlstream.connectors.postgres.changelog import keyed_statements, keyless_statements
from sqlstream.connectors.postgres.table import (
    TableName,
    check_table,
    connect,
    create_table,
    existing_columns,
    has_unique_key,
)
from sqlstream.connectors.postgres.types import csv_rows, quote_ident, row_signs
from sqlstream.connectors.registry import register_sink
from sqlstream.errors import ConnectorError, Location
from sqlstream.failure_isolation import isolate_failures
from sqlstream.hidden import OP_COLUMN

__all__ = ["PostgresSink", "PostgresWriter", "CONNECTION_OPTIONS"]

CONNECTION_OPTIONS = (
    OptionSpec("url", required=True, doc="postgresql://user:password@host:port/dbname (libpq URI or key=value DSN)"),
    OptionSpec("table", required=True, doc="table name"),
    OptionSpec("schema", doc="PostgreSQL schema of the table (default: the search_path)"),
)

#: errors that a row's values cause (bisected to dead letters); anything else fails the run
_ROW_ERRORS = (psycopg.errors.DataError, psycopg.errors.IntegrityError)
_stage_numbers = itertools.count()


@register_sink
class PostgresSink(SinkConnector):
    name = "postgres"
    options = CONNECTION_OPTIONS + (
        OptionSpec("primary_key", doc="updating results: the key columns to upsert by, comma-separated "
                                      "(default: the query's key)"),
    )

    def validate(self, where: Location | None) -> None:
        if not str(self.config["table"]).strip():
            raise ConnectorError("postgres: option 'table' is empty", location=where)

    def open(self, schema: pa.Schema, ctx: RunContext) -> SinkWriter:
        return PostgresWriter(self.sink_name, self.config, schema, ctx)

    def describe(self) -> str:
        return f"postgres table {self.config['table']}"


class PostgresWriter(SinkWriter):
    """Buffers up to ``batch_size`` rows, then writes them in one transaction."""

    def __init__(self, sink_name: str, config: dict[str, Any], schema: pa.Schema, ctx: RunContext):
        self.owner = f"sink '{sink_name}'"
        self.sink_name = sink_name
        self.ctx = ctx
        self.updating = OP_COLUMN in schema.names
        self.columns = pa.schema([f for f in schema if f.name != OP_COLUMN])
        self.name = TableName(config.get("schema"), config["table"])
        self.key = _key(config.get("primary_key"), ctx.upsert_key_columns if self.updating else None, self.columns, self.owner)
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.rows_written = 0
        self.conn = connect(config["url"], self.owner)
        try:
            self._prepare()
        except BaseException:
            self.conn.close()
            raise

    def _prepare(self) -> None:
        columns = existing_columns(self.conn, self.name)
        if columns is None:
            create_table(self.conn, self.name, self.columns, self.key if self.updating else None)
            columns = existing_columns(self.conn, self.name)
        else:
            check_table(self.owner, self.name, self.columns, columns)
            if self.updating and self.key and not has_unique_key(self.conn, self.name, self.key):
                raise ConnectorError(
                    f"{self.owner}: table {self.name} has no primary key or unique index on ({', '.join(self.key)}), "
                    "which upserts need",
                    hint=f"ALTER TABLE {self.name.sql} ADD PRIMARY KEY ({', '.join(quote_ident(k) for k in self.key)})",
                )
        # binary COPY where every column has exactly the type its values have in binary; else CSV
        self.binary = all(binary_typname(f.type) == columns[f.name][0]
                          or (binary_typname(f.type) == "text" and columns[f.name][0] == "varchar") for f in self.columns)
        quoted = [quote_ident(f.name) for f in self.columns]
        self.column_list = ", ".join(quoted)
        if self.updating:
            self.stage = f"sqlstream_stage_{next(_stage_numbers)}"
            typed = ", ".join(f"{q} {columns[f.name][1]}" for q, f in zip(quoted, self.columns))
            self.conn.execute(f"CREATE TEMP TABLE {self.stage} (__seq bigint, __op text, {typed}) ON COMMIT DELETE ROWS")
            self.statements = (keyed_statements(self.name, self.stage, self.columns, self.key) if self.key
                               else keyless_statements(self.name, self.stage, self.columns, "__seq"))
        self.conn.commit()

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        if self.pending_rows >= self.ctx.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        batch = pa.Table.from_batches(self.pending).combine_chunks()
        self.pending, self.pending_rows = [], 0
        try:
            with self.conn.transaction():
                self._write_isolating(batch)
        except psycopg.Error as error:
            raise ConnectorError(f"{self.owner}: writing to {self.name} failed: {str(error).strip()}") from error
        self.rows_written += batch.num_rows

    def _write_isolating(self, batch: pa.Table) -> None:
        try:
            with self.conn.transaction():  # a savepoint: the whole batch at once
                self._apply(batch)
            return
        except _ROW_ERRORS:
            pass
        fatal: list[Exception] = []

        def attempt(start: int, end: int) -> None:
            if fatal:
                raise fatal[0]
            try:
                with self.conn.transaction():
                    self._apply(batch.slice(start, end - start))
            except _ROW_ERRORS:
                raise
            except Exception as error:
                fatal.append(error)
                raise

        _, bad = isolate_failures(batch.num_rows, attempt)
        if fatal:
            raise fatal[0]
        if bad:
            self._dead_letters(batch, bad)

    def _dead_letters(self, batch: pa.Table, bad: list[tuple[int, Exception]]) -> None:
        details = [str(error).strip().splitlines()[0] for _, error in bad]
        if self.ctx.dead_letter is None:
            raise ConnectorError(f"{self.owner}: PostgreSQL rejected a row: {details[0]}")
        rows = [i for i, _ in bad]
        self.ctx.dead_letter(rows_as_dead_letters(batch.combine_chunks().to_batches()[0], rows, self.sink_name,
                                                  "sink", details))

    def _apply(self, batch: pa.Table) -> None:
        if not self.updating:
            self._copy(f"COPY {self.name.sql} ({self.column_list}) FROM STDIN", batch)
            return
        ops = batch.column(OP_COLUMN).combine_chunks()
        data = batch.drop_columns([OP_COLUMN])
        first = pa.array(row_signs(ops) if not self.key else np.arange(batch.num_rows, dtype=np.int64))
        staged = pa.Table.from_arrays([first, ops, *data.columns], names=["__seq", "__op", *data.column_names])
        self._copy(f"COPY {self.stage} FROM STDIN", staged)
        with self.conn.cursor() as cursor:
            for statement in self.statements:
                cursor.execute(statement)
        self.conn.execute(f"TRUNCATE {self.stage}")

    def _copy(self, statement: str, table: pa.Table) -> None:
        if self.binary:
            statement, payload = statement + " (FORMAT binary)", binary_copy(table)
        else:
            statement, payload = statement + " (FORMAT csv)", csv_rows(table)
        with self.conn.cursor() as cursor, cursor.copy(statement) as copy:
            copy.write(payload)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.conn.close()

    def abort(self) -> None:
        self.conn.close()

    def status(self) -> dict[str, Any]:
        return {"rows_written": self.rows_written}


def _key(option: str | None, query_key: list[str] | None, schema: pa.Schema, owner: str) -> list[str] | None:
    if option is None:
        return list(query_key) if query_key else None
    key = [part.strip() for part in option.split(",") if part.strip()]
    for column in key:
        if column not in schema.names:
            raise ConnectorError(f"{owner}: primary_key column '{column}' is not a column of the query",
                                 hint=f"columns: {', '.join(schema.names)}")
    return key

