"""The public API is what ``sqlstream/__init__.py`` exports: a change to it is deliberate."""

from __future__ import annotations

import pytest

import sqlstream

PUBLIC_NAMES = [
    "ConnectorError",
    "ExecutionError",
    "PlanError",
    "QueryResult",
    "Session",
    "SqlAnalysisError",
    "SqlError",
    "SqlStreamError",
    "SqlSyntaxError",
    "StatementResult",
    "UdfError",
    "UnsupportedSqlError",
    "udaf",
    "udf",
]


def test_all_is_the_public_api():
    assert sorted(sqlstream.__all__) == PUBLIC_NAMES
    assert len(sqlstream.__all__) == len(set(sqlstream.__all__))


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_public_name_is_importable(name):
    value = getattr(sqlstream, name)  # what ``from sqlstream import name`` reads
    assert value.__module__.startswith("sqlstream.")
