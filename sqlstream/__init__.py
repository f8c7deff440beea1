"""sqlstream: SQL-first stream processing over Arrow micro-batches.

The public API is what this module exports; everything else is internal.
"""

from sqlstream.errors import (
    ConnectorError,
    ExecutionError,
    PlanError,
    SqlAnalysisError,
    SqlError,
    SqlStreamError,
    SqlSyntaxError,
    UdfError,
    UnsupportedSqlError,
)
from sqlstream.results import QueryResult
from sqlstream.session import Session, StatementResult
from sqlstream.udf.decorator import udf

__all__ = [
    "Session",
    "StatementResult",
    "QueryResult",
    "udf",
    "SqlStreamError",
    "SqlError",
    "SqlSyntaxError",
    "SqlAnalysisError",
    "UnsupportedSqlError",
    "PlanError",
    "ConnectorError",
    "UdfError",
    "ExecutionError",
]

__version__ = "0.1.0"
