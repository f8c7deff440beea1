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

With checkpoints (``RunContext.checkpointing``) the sink is exactly-once: flushes stage
rows per epoch and ``commit(N)`` moves epoch N into the table in one transaction with an
epoch marker (:mod:`~sqlstream.connectors.postgres.epochs`).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa

from sqlstream.connectors.base import RunContext, SinkConnector, SinkWriter
from sqlstream.connectors.dead_letters import DeadLetter, rows_as_dead_letters
from sqlstream.connectors.options import OptionSpec
from sqlstream.connectors.postgres.binary import binary_copy, binary_typname
from sqlstream.connectors.postgres.changelog import keyed_statements, keyless_statements
from sqlstream.connectors.postgres.epochs import EPOCH_COLUMN, ROW_ERRORS, SEQ_COLUMN, EpochStage
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
from sqlstream.failure_isolation import reject_failing_rows
from sqlstream.hidden import OP_COLUMN

__all__ = ["PostgresSink", "PostgresWriter", "CONNECTION_OPTIONS"]

CONNECTION_OPTIONS = (
    OptionSpec("url", required=True, doc="postgresql://user:password@host:port/dbname (libpq URI or key=value DSN)"),
    OptionSpec("table", required=True, doc="table name"),
    OptionSpec("schema", doc="PostgreSQL schema of the table (default: the search_path)"),
)

_ROW_ERRORS = ROW_ERRORS
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
    """Buffers up to ``batch_size`` rows, then writes them in one transaction; with
    checkpoints, into the epoch's stage (:class:`EpochStage`), moved into the table by
    ``commit``."""

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
        self.epochs: EpochStage | None = None  # with checkpoints
        self._recovered = False
        self._epoch = 0  # the epoch being written
        self._epoch_rows = 0  # rows staged in it so far (its next __seq: _epoch_seq)
        self._epoch_seq = 0
        self._prepared_rows: dict[int, int] = {}
        self._staged = 0  # rows handed to write() with checkpoints...
        self._landed = 0  # ...and, of those, rows in committed epochs (or dead letters)
        self.epochs_committed = 0
        self.conn = connect(config["url"], self.owner)
        try:
            self._prepare()
            if ctx.checkpointing:
                self.epochs = EpochStage(self.conn, self.owner, sink_name, self.name, self.columns, self.declared,
                                         self.updating, self.key)
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
        self.declared = columns
        # binary COPY where every column has exactly the type its values have in binary; else CSV
        self.binary = all(binary_typname(f.type) == columns[f.name][0]
                          or (binary_typname(f.type) == "text" and columns[f.name][0] == "varchar") for f in self.columns)
        quoted = [quote_ident(f.name) for f in self.columns]
        self.column_list = ", ".join(quoted)
        if self.updating and not self.ctx.checkpointing:  # with checkpoints: EpochStage
            self.stage = f"sqlstream_stage_{next(_stage_numbers)}"
            typed = ", ".join(f"{q} {columns[f.name][1]}" for q, f in zip(quoted, self.columns))
            self.conn.execute(f"CREATE TEMP TABLE {self.stage} (__seq bigint, __op text, {typed}) ON COMMIT DELETE ROWS")
            self.statements = (keyed_statements(self.name, self.stage, self.columns, self.key) if self.key
                               else keyless_statements(self.name, self.stage, self.columns, "__seq"))
        self.conn.commit()

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self.epochs is not None:
            self._staged += batch.num_rows
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        if self.pending_rows >= self.ctx.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        batch = pa.Table.from_batches(self.pending).combine_chunks()
        self.pending, self.pending_rows = [], 0
        if self.epochs is not None:
            self._require_recovered()
            batch = self.epochs.number(batch, self._epoch, self._epoch_seq)
            self._epoch_seq += batch.num_rows
        try:
            with self.conn.transaction():
                rejected = self._write_isolating(batch)
        except psycopg.Error as error:
            raise ConnectorError(f"{self.owner}: writing to {self.name} failed: {str(error).strip()}") from error
        self.rows_written += batch.num_rows
        if self.epochs is not None:
            self._epoch_rows += batch.num_rows - rejected
            self._landed += rejected

    def _write_isolating(self, batch: pa.Table) -> int:
        """Write ``batch``; returns how many of its rows became dead letters."""
        bad = reject_failing_rows(batch.num_rows, lambda start, end: self._apply_alone(batch.slice(start, end - start)),
                                  _ROW_ERRORS)
        if bad:
            self._dead_letters(batch, bad)
        return len(bad)

    def _apply_alone(self, batch: pa.Table) -> None:
        with self.conn.transaction():  # a savepoint: a failing part leaves the rest of the transaction
            self._apply(batch)

    def _dead_letters(self, batch: pa.Table, bad: list[tuple[int, Exception]]) -> None:
        details = [str(error).strip().splitlines()[0] for _, error in bad]
        if self.ctx.dead_letter is None:
            raise ConnectorError(f"{self.owner}: PostgreSQL rejected a row: {details[0]}")
        rows = [i for i, _ in bad]
        batch = batch.drop_columns([c for c in (EPOCH_COLUMN, SEQ_COLUMN) if c in batch.column_names])
        self.ctx.dead_letter(rows_as_dead_letters(batch.combine_chunks().to_batches()[0], rows, self.sink_name,
                                                  "sink", details))

    def _reject(self, rejected: list[tuple[str, str]]) -> None:
        """Rows the table rejected when an epoch moved in: dead letters."""
        if self.ctx.dead_letter is None:
            raise ConnectorError(f"{self.owner}: PostgreSQL rejected a row: {rejected[0][1]}")
        self.ctx.dead_letter([DeadLetter(self.sink_name, "sink", detail, raw) for raw, detail in rejected])

    def _apply(self, batch: pa.Table) -> None:
        if self.epochs is not None:
            self._copy(self.epochs.copy_statement(batch.column_names), batch)
            return
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

    # -- checkpoints ------------------------------------------------------------------------------

    @property
    def delivery(self) -> str:  # type: ignore[override]
        """'exactly-once' with checkpoints: an epoch's rows land in one transaction with
        its marker, and a replayed epoch finds the marker and changes nothing."""
        return "exactly-once" if self.epochs is not None else "at-least-once"

    def _require_recovered(self) -> EpochStage:
        if self.epochs is None or not self._recovered:
            raise ConnectorError(
                f"{self.owner}: a checkpointed PostgreSQL sink was written to before recover(): the run must "
                "recover it first (recover(0, None) when there is no checkpoint yet)"
            )
        return self.epochs

    def prepare_commit(self, epoch: int) -> dict | None:
        """Stage what is buffered (each flush is a committed transaction into a logged
        table: durable) and close the epoch; ``{"rows": staged rows}``."""
        if self.epochs is None:
            return super().prepare_commit(epoch)
        self._require_recovered()
        if epoch != self._epoch:
            raise ConnectorError(f"{self.owner}: checkpoint epoch {epoch} prepared while the sink writes epoch "
                                 f"{self._epoch}")
        self.flush()
        prepared = {"rows": self._epoch_rows}
        self._prepared_rows[epoch] = self._epoch_rows
        self._epoch, self._epoch_rows, self._epoch_seq = epoch + 1, 0, 0
        return prepared

    def commit(self, epoch: int, prepared: dict | None) -> None:
        """Move the epoch's staged rows into the table with its marker, in one
        transaction; nothing when the marker is there already."""
        if self.epochs is None:
            return
        stage = self._require_recovered()
        try:
            if stage.commit(epoch, self._reject, alone=self._epoch_rows == 0) is not None:
                self.epochs_committed += 1
        except psycopg.Error as error:
            raise ConnectorError(f"{self.owner}: committing epoch {epoch} to {self.name} failed: "
                                 f"{str(error).strip()}") from error
        self._landed += self._prepared_rows.pop(epoch, 0)

    def recover(self, epoch: int, prepared: dict | None) -> None:
        if self.epochs is None:
            return
        try:
            if epoch == 0:
                self.epochs.start_history()
            else:
                self.epochs.recover(epoch, prepared, self._reject)
        except psycopg.Error as error:
            raise ConnectorError(f"{self.owner}: recovering epoch {epoch} in {self.name} failed: "
                                 f"{str(error).strip()}") from error
        self._recovered = True
        self._epoch, self._epoch_rows, self._epoch_seq = epoch + 1, 0, 0

    def durable_rows(self, written: int) -> int:
        """With checkpoints: rows of committed epochs only (input is acknowledged as
        checkpoints commit)."""
        if self.epochs is None:
            return super().durable_rows(written)
        return written - (self._staged - self._landed)

    def close(self) -> None:
        """A clean end; with checkpoints, rows written after the last checkpoint land as
        one more epoch (a run resumed from an earlier checkpoint rolls it back or refuses)."""
        try:
            if self.epochs is not None and self._recovered and (self.pending or self._epoch_rows):
                epoch = self._epoch
                self.commit(epoch, self.prepare_commit(epoch))
            else:
                self.flush()
        finally:
            self.conn.close()

    def abort(self) -> None:
        """A failed run: what is staged stays for the next run's ``recover`` to land or drop."""
        self.conn.close()

    def status(self) -> dict[str, Any]:
        if self.epochs is None:
            return {"rows_written": self.rows_written}
        return {"rows_written": self.rows_written, "epochs_committed": self.epochs_committed}


def _key(option: str | None, query_key: list[str] | None, schema: pa.Schema, owner: str) -> list[str] | None:
    if option is None:
        return list(query_key) if query_key else None
    key = [part.strip() for part in option.split(",") if part.strip()]
    for column in key:
        if column not in schema.names:
            raise ConnectorError(f"{owner}: primary_key column '{column}' is not a column of the query",
                                 hint=f"columns: {', '.join(schema.names)}")
    return key

