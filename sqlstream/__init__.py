"""sqlstream: SQL-first stream processing over Arrow micro-batches.

The public API is what this module exports; everything else is internal. The names
load on first use (PEP 562), so that ``import sqlstream`` alone, and the command line's
``--help``, do not pay for pyarrow, DataFusion or sqlglot.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

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
from sqlstream.udf.decorator import udf  # light (pyarrow loads when a function is decorated)

if TYPE_CHECKING:
    from sqlstream.results import QueryResult
    from sqlstream.session import Session, StatementResult

__all__ = [
    "Session",
    "StatementResult",
    "QueryResult",
    "udf",
    "udaf",
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

_LAZY = {
    "Session": "sqlstream.session",
    "StatementResult": "sqlstream.session",
    "QueryResult": "sqlstream.results",
    "udaf": "sqlstream.udf.aggregate",  # imports pyarrow
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sqlstream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


# Jupyter: ``%load_ext sqlstream`` (see sqlstream.notebook)
def load_ipython_extension(ipython) -> None:
    importlib.import_module("sqlstream.notebook").load_ipython_extension(ipython)
