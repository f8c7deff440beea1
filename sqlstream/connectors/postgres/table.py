"""A PostgreSQL table as a sink or a lookup TABLE sees it: connecting, what columns it
has, creating it from a query's schema, and checking an existing one."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import pyarrow as pa

from sqlstream.connectors.postgres.types import accepted_types, postgres_type, quote_ident
from sqlstream.errors import ConnectorError

__all__ = ["TableName", "connect", "existing_columns", "create_table", "check_table", "has_unique_key"]


@dataclass(frozen=True)
class TableName:
    schema: str | None
    table: str

    @property
    def sql(self) -> str:
        return (quote_ident(self.schema) + "." if self.schema else "") + quote_ident(self.table)

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table


def connect(url: str, owner: str) -> psycopg.Connection:
    try:
        return psycopg.connect(url, autocommit=False)
    except psycopg.Error as error:
        raise ConnectorError(
            f"{owner}: cannot connect to PostgreSQL: {str(error).strip()}",
            hint="check url = 'postgresql://user@host:port/dbname'",
        ) from error


def existing_columns(conn: psycopg.Connection, name: TableName) -> dict[str, tuple[str, str]] | None:
    """Column name → (type name, declared type) of table ``name``, or None if it does not exist."""
    regclass = conn.execute("SELECT to_regclass(%s)::oid", [name.sql]).fetchone()[0]
    if regclass is None:
        return None
    rows = conn.execute(
        "SELECT a.attname, t.typname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " JOIN pg_type t ON t.oid = a.atttypid WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY a.attnum",
        [regclass],
    ).fetchall()
    return {n: (t, f) for n, t, f in rows}


def create_table(conn: psycopg.Connection, name: TableName, schema: pa.Schema, key: list[str] | None) -> None:
    columns = [f"{quote_ident(f.name)} {postgres_type(f.type)}" for f in schema]
    if key:
        columns.append(f"PRIMARY KEY ({', '.join(quote_ident(k) for k in key)})")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {name.sql} ({', '.join(columns)})")


def check_table(owner: str, name: TableName, schema: pa.Schema, columns: dict[str, tuple[str, str]]) -> None:
    """ConnectorError unless every column of ``schema`` is in the table with a type that takes its values."""
    for f in schema:
        if f.name not in columns:
            raise ConnectorError(
                f"{owner}: table {name} has no column '{f.name}'",
                hint=f"its columns: {', '.join(columns)}; add it (ALTER TABLE {name.sql} ADD COLUMN "
                f"{quote_ident(f.name)} {postgres_type(f.type)}) or rename the query's column",
            )
        typname, declared = columns[f.name]
        accepted = accepted_types(f.type)
        if typname not in accepted:
            raise ConnectorError(
                f"{owner}: column '{f.name}' of table {name} is {declared}, which cannot hold the query's "
                f"{postgres_type(f.type)} values",
                hint=f"a column for it may be: {', '.join(sorted(accepted))}",
            )


def has_unique_key(conn: psycopg.Connection, name: TableName, key: list[str]) -> bool:
    """True when table ``name`` has a primary key or unique index on exactly ``key``."""
    rows = conn.execute(
        "SELECT array_agg(a.attname ORDER BY a.attname) FROM pg_index i"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indpred IS NULL GROUP BY i.indexrelid",
        [name.sql],
    ).fetchall()
    return any(sorted(r[0]) == sorted(key) for r in rows)
