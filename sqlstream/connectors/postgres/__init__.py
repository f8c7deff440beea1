"""``connector = 'postgres'``: a PostgreSQL table as a sink (COPY or upsert) and as a lookup TABLE."""

from sqlstream.connectors.postgres.sink import PostgresSink, PostgresWriter
from sqlstream.connectors.postgres.source import PostgresSource

__all__ = ["PostgresSink", "PostgresWriter", "PostgresSource"]
